"""gistify inside LangChain and LlamaIndex, with the real packages and the real scorer, offline: a BM25
retriever over the paragraphs of examples/albedo.txt, its documents compressed under one budget."""

from __future__ import annotations

from pathlib import Path

import pytest

import gistify
from conftest import INTEGRATIONS_TEST, assert_spans_rebuild, need

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
    return gistify.Scorer.load()  # not cached: an error that names `gistify models fetch` (scripts/setup.sh)


def check_joint(scorer, retrieved: list[str], kept: list[str]):
    """One budget for all: the retrieved passages, joined by a blank line and compressed once, meet BUDGET within
    a token, and the passages given back are that one compression cut at the passages' edges (their own token
    counts leave out the blank lines between them, so their sum is a few tokens under BUDGET)."""
    from gistify.integrations.passages import SEPARATOR

    joint = gistify.compress(SEPARATOR.join(retrieved), QUESTION, tokens=BUDGET, scorer=scorer)
    assert abs(joint.tokens_out - BUDGET) <= 1
    assert SEPARATOR.join(kept) == joint.text


def check_spans(original: str, compressed: str, meta: dict):
    """The compressed passage is exactly its kept spans of the original, in order, joined by whitespace."""
    assert_spans_rebuild(original, meta["kept_spans"], compressed)
    assert meta["tokens_out"] <= meta["tokens_in"]


def test_langchain_retrieval_chain_keeps_the_answer(paragraphs, scorer):
    need("langchain_core", "rank_bm25", install=INTEGRATIONS_TEST)
    bm25 = need("langchain_community.retrievers", install=INTEGRATIONS_TEST)
    classic = need("langchain_classic.retrievers", install=INTEGRATIONS_TEST)
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
    check_joint(scorer, [d.page_content for d in retrieved], [d.page_content for d in out["docs"]])
    assert sum(d.metadata["gistify"]["tokens_out"] for d in out["docs"]) <= BUDGET < before
    by_paragraph = {d.metadata["paragraph"]: d.page_content for d in docs}
    for d in out["docs"]:
        assert d.metadata["gistify"]["budget"] == f"tokens={BUDGET}"
        check_spans(by_paragraph[d.metadata["paragraph"]], d.page_content, d.metadata["gistify"])
    assert all("gistify" not in d.metadata for d in docs)  # the documents given are not changed


def test_llamaindex_query_engine_keeps_the_answer(paragraphs, scorer):
    bm25 = need("llama_index.core", "llama_index.retrievers.bm25", install=INTEGRATIONS_TEST)
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
    check_joint(
        scorer, [n.node.get_content() for n in retriever.retrieve(QUESTION)], [n.node.get_content() for n in kept]
    )
    assert sum(n.node.metadata["gistify"]["tokens_out"] for n in kept) <= BUDGET
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
            assert abs(p.tokens_out - gistify.Budget(keep=0.5).target(p.tokens_in)) <= 1  # each its own budget
            check_spans(t, p.text, p.metadata())
    with pytest.raises(ValueError, match="exactly one"):
        compress_passages(texts, QUESTION, scorer=scorer)


def test_bad_budget_fails_at_construction():
    need("langchain_core", install=INTEGRATIONS_TEST)
    from gistify.integrations.langchain import GistifyCompressor

    with pytest.raises(ValueError, match="keep"):
        GistifyCompressor(keep=1.5)
