"""gistify inside LangChain and LlamaIndex, with the real packages and the real scorer, offline: a BM25
retriever over the paragraphs of examples/albedo.txt, its documents compressed under one budget."""

from __future__ import annotations

from pathlib import Path

import pytest

import gistify

pytestmark = pytest.mark.real

ALBEDO = Path(__file__).parents[1] / "examples" / "albedo.txt"
QUESTION = "Which moon of Saturn has one of the highest known albedos?"
ANSWER = "Enceladus"
BUDGET = 120  # tokens for all retrieved passages together (they hold about 600)


@pytest.fixture(scope="module")
def paragraphs():
    return [line for line in ALBEDO.read_text(encoding="utf-8").splitlines() if len(line) > 80]


@pytest.fixture(scope="module")
def scorer(one_thread):
    try:
        return gistify.Scorer.load()
    except Exception as e:  # not cached (scripts/setup.sh fetches it): these tests need the real scorer
        pytest.skip(f"the embedded scorer does not load: {e}")


def check_spans(original: str, compressed: str, meta: dict):
    """Every kept span is verbatim text of the original passage, in order, and they make up the text."""
    pos = 0
    for s, e in meta["kept_spans"]:
        assert 0 <= s < e <= len(original)
        at = compressed.find(original[s:e], pos)
        assert at >= 0, (original[s:e], compressed)
        pos = at + e - s
    assert meta["tokens_out"] <= meta["tokens_in"]


def test_langchain_retrieval_chain_keeps_the_answer(paragraphs, scorer):
    pytest.importorskip("langchain_core")
    pytest.importorskip("rank_bm25")
    bm25 = pytest.importorskip("langchain_community.retrievers")
    classic = pytest.importorskip("langchain_classic.retrievers")
    from langchain_core.documents import Document
    from langchain_core.prompts import PromptTemplate
    from langchain_core.runnables import RunnableParallel, RunnablePassthrough

    from gistify.integrations.langchain import GistifyCompressor

    docs = [Document(page_content=p, metadata={"paragraph": i}) for i, p in enumerate(paragraphs)]
    base = bm25.BM25Retriever.from_documents(docs, k=4)
    retrieved = base.invoke(QUESTION)
    assert any(ANSWER in d.page_content for d in retrieved)
    before = sum(gistify.compress(d.page_content, keep=1.0, scorer=scorer).tokens_in for d in retrieved)

    compressor = GistifyCompressor(tokens=BUDGET, scorer=scorer)
    retriever = classic.ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)
    prompt = PromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}\nAnswer:")
    chain = RunnableParallel(docs=retriever, question=RunnablePassthrough()).assign(
        prompt=lambda x: prompt.invoke(
            {"context": "\n\n".join(d.page_content for d in x["docs"]), "question": x["question"]}
        ).to_string()
    )
    out = chain.invoke(QUESTION)

    assert ANSWER in out["prompt"]
    used = sum(d.metadata["gistify"]["tokens_out"] for d in out["docs"])
    assert used <= BUDGET + 2 * len(out["docs"]) < before  # one budget for all, within a token per cut
    by_paragraph = {d.metadata["paragraph"]: d.page_content for d in docs}
    for d in out["docs"]:
        assert d.metadata["gistify"]["budget"] == f"tokens={BUDGET}"
        check_spans(by_paragraph[d.metadata["paragraph"]], d.page_content, d.metadata["gistify"])
    assert all("gistify" not in d.metadata for d in docs)  # the documents given are not changed


def test_llamaindex_query_engine_keeps_the_answer(paragraphs, scorer):
    pytest.importorskip("llama_index.core")
    bm25 = pytest.importorskip("llama_index.retrievers.bm25")
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.response_synthesizers.no_text import NoText
    from llama_index.core.schema import MetadataMode, TextNode

    from gistify.integrations.llamaindex import GistifyPostprocessor

    nodes = [TextNode(text=p, id_=f"p{i}", metadata={"paragraph": i}) for i, p in enumerate(paragraphs)]
    retriever = bm25.BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=4)
    # NoText: the pipeline retrieves, postprocesses and returns the context; no LLM is called
    engine = RetrieverQueryEngine(
        retriever=retriever,
        response_synthesizer=NoText(llm=_no_llm()),
        node_postprocessors=[GistifyPostprocessor(tokens=BUDGET, scorer=scorer)],
    )
    response = engine.query(QUESTION)
    kept = response.source_nodes

    assert kept and any(ANSWER in n.node.get_content() for n in kept)
    assert sum(n.node.metadata["gistify"]["tokens_out"] for n in kept) <= BUDGET + 2 * len(kept)
    for n in kept:
        original = nodes[n.node.metadata["paragraph"]]
        check_spans(original.text, n.node.get_content(), n.node.metadata["gistify"])
        assert "kept_spans" not in n.node.get_content(metadata_mode=MetadataMode.LLM)  # not read by the LLM
        assert n.score is not None
    assert all("gistify" not in n.metadata for n in nodes)


def _no_llm():
    from llama_index.core.llms import MockLLM

    return MockLLM()  # never called by NoText; given so that no default LLM is looked up


def test_per_document_budget_and_empty_documents(paragraphs, scorer):
    from gistify.integrations.passages import compress_passages

    texts = [paragraphs[0], "   ", paragraphs[1]]
    each = compress_passages(texts, QUESTION, keep=0.5, joint=False, method="selfinfo", scorer=scorer)
    assert [p.text == "" for p in each] == [False, True, False]
    for t, p in zip(texts, each):
        if p.text:
            assert p.tokens_out <= p.tokens_in // 2 + 1
            check_spans(t, p.text, p.metadata())
    with pytest.raises(ValueError, match="exactly one"):
        compress_passages(texts, QUESTION, scorer=scorer)


def test_bad_budget_fails_at_construction():
    pytest.importorskip("langchain_core")
    from gistify.integrations.langchain import GistifyCompressor

    with pytest.raises(ValueError, match="keep"):
        GistifyCompressor(keep=1.5)
