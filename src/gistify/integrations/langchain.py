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

from gistify.integrations.passages import PassageCompression, options_model


class GistifyCompressor(PassageCompression, options_model(), BaseDocumentCompressor):
    """Compress retrieved documents for the query under a token budget (`keep` or `tokens`)."""

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Any = None
    ) -> Sequence[Document]:
        if not documents:
            return []
        passages = self._compress(
            [d.page_content for d in documents],
            query or None,
        )
        out = []
        for doc, p in zip(documents, passages):
            if p.text or self.keep_empty:
                meta = {**doc.metadata, "gistify": p.metadata()}
                out.append(Document(page_content=p.text, metadata=meta, id=doc.id))
        return out
