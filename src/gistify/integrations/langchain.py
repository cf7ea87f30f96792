"""A LangChain document compressor: plug it into `ContextualCompressionRetriever` to compress what a
retriever returns for the query.

    from langchain_classic.retrievers import ContextualCompressionRetriever
    from gistify.integrations.langchain import GistifyCompressor

    retriever = ContextualCompressionRetriever(
        base_compressor=GistifyCompressor(tokens=300), base_retriever=bm25_or_vector_store_retriever
    )
    docs = retriever.invoke("What is the albedo of fresh snow?")

The query is the question. By default the budget is for all retrieved documents together (`joint=False`:
each its own). Documents come back as new `Document` objects, in the retriever's order, with the compressed
text and the original metadata plus `metadata["gistify"]` (tokens_in, tokens_out, kept_spans into the
original text, budget, method); the documents given are not changed. A document the budget took everything
from is dropped (`keep_empty=True` keeps it, with empty text), since an empty passage only costs the prompt
its separators.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from langchain_core.documents import Document
    from langchain_core.documents.compressor import BaseDocumentCompressor
except ImportError as e:  # pragma: no cover - depends on the extra
    raise ImportError("gistify.integrations.langchain needs LangChain: pip install 'gistify[langchain]'") from e
from pydantic import ConfigDict, Field, PrivateAttr

from gistify.integrations.passages import compress_passages


class GistifyCompressor(BaseDocumentCompressor):
    """Compress retrieved documents for the query under a token budget (`keep` or `tokens`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    keep: float | None = None
    tokens: int | None = None
    joint: bool = True
    method: str = "reinforce"
    params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    tokenizer: str = "scorer"
    keep_empty: bool = False
    scorer: Any = Field(default=None, exclude=True)
    _loaded: Any = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        import gistify

        gistify.Budget(keep=self.keep, tokens=self.tokens)  # a bad budget fails here, not at the first query
        gistify.get_method(self.method, kind="text", **self.params)

    def _scorer(self):
        if self.scorer is not None:
            return self.scorer
        if self._loaded is None:
            import gistify

            self._loaded = gistify.Scorer.load(self.model)  # once per compressor, not per query
        return self._loaded

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Any = None
    ) -> Sequence[Document]:
        if not documents:
            return []
        passages = compress_passages(
            [d.page_content for d in documents],
            query or None,
            keep=self.keep,
            tokens=self.tokens,
            joint=self.joint,
            method=self.method,
            scorer=self._scorer(),
            tokenizer=self.tokenizer,
            **self.params,
        )
        out = []
        for doc, p in zip(documents, passages):
            if p.text or self.keep_empty:
                meta = {**doc.metadata, "gistify": p.metadata()}
                out.append(Document(page_content=p.text, metadata=meta, id=doc.id))
        return out
