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

from gistify.integrations.passages import PassageCompression
from gistify.text import DEFAULT_METHOD


class GistifyCompressor(PassageCompression, BaseDocumentCompressor):
    """Compress retrieved documents for the query under a token budget (`keep` or `tokens`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    keep: float | None = None
    tokens: int | None = None
    joint: bool = True
    method: str = DEFAULT_METHOD
    params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    tokenizer: str = "scorer"
    keep_empty: bool = False
    scorer: Any = Field(default=None, exclude=True)
    _loaded: Any = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        self._validate()

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
