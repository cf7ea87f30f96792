"""A LlamaIndex node postprocessor: compress the retrieved nodes for the query before synthesis.

    from gistify.integrations.llamaindex import GistifyPostprocessor

    engine = index.as_query_engine(node_postprocessors=[GistifyPostprocessor(tokens=300)])
    # or RetrieverQueryEngine.from_args(retriever, node_postprocessors=[GistifyPostprocessor(keep=0.3)])

The query is the question. By default the budget is for all retrieved nodes together (`joint=False`: each
its own). Nodes come back as copies, in the retriever's order with their scores, holding the compressed text
and `metadata["gistify"]` (tokens_in, tokens_out, kept_spans into the original text, budget, method); the
nodes given are not changed. That key is excluded from what the LLM and the embedder read, or the spans
would cost the prompt what compression saved. A node the budget took everything from is dropped
(`keep_empty=True` keeps it, with empty text).
"""

from __future__ import annotations

try:
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import NodeWithScore, QueryBundle
except ImportError as e:  # pragma: no cover - depends on the extra
    raise ImportError("gistify.integrations.llamaindex needs LlamaIndex: pip install 'gistify[llamaindex]'") from e

from gistify.integrations.passages import PassageCompression, options_model

KEY = "gistify"


class GistifyPostprocessor(PassageCompression, options_model(), BaseNodePostprocessor):
    """Compress retrieved nodes for the query under a token budget (`keep` or `tokens`)."""

    @classmethod
    def class_name(cls) -> str:
        return "GistifyPostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if not nodes:
            return []
        passages = self._compress(
            [n.node.get_content() for n in nodes],
            query_bundle.query_str if query_bundle and query_bundle.query_str else None,
        )
        out = []
        for n, p in zip(nodes, passages):
            if not (p.text or self.keep_empty):
                continue
            node = n.node.model_copy(deep=True)
            node.set_content(p.text)
            node.metadata[KEY] = p.metadata()
            for excluded in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
                if KEY not in excluded:
                    excluded.append(KEY)
            out.append(NodeWithScore(node=node, score=n.score))
        return out
