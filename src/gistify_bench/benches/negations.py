"""Negations under compression (issue 26): does a kept clause ever lose its "not"?

A hand-written corpus: nine short documents (operations runbooks, a package leaflet, travel rules, lab safety,
a lease...), each mixing plain sentences with negated instructions and facts ("do not", "never", "no longer",
"isn't", "without", "except", "unless", "cannot"): 54 negated sentences, each with a question that asks about it.
Every document is compressed at keeps 0.3 and 0.1, without a question and with each of its negated sentences'
questions, with today's defaults and with the raw cut of before (`protect_negations=False, fallback="off"`).

A negated sentence is *inverted* when its negating word is dropped while a word it governs is kept: a content
word among the next one to three words after it, up to punctuation ("do NOT [run] the [installer]"), the words
the reader would read as an affirmation. A dropped sentence is information lost, not meaning changed, and is not
counted.

    python -m gistify_bench.benches.negations                  # the table on stdout (markdown)
    python -m gistify_bench.benches.negations --json out.json  # and every compression's record

On the shared 2-core machine it takes a few minutes (reinforce-fast, the default method, on the embedded SmolLM2).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass

# (sentence, question) pairs; a question marks a negated sentence, None a plain one. The negating word is found
# with CUE below, the first match in the sentence.
DOCS: dict[str, list[tuple[str, str | None]]] = {
    "installer": [
        ("The installer sets up the agent, its configuration and a service that starts at boot.", None),
        ("Do NOT run the installer as root.", "Who should run the installer?"),
        ("It asks for the address of the collector and a token from the admin console.", None),
        ("The token is no longer valid after 24 hours.", "How long is the token valid?"),
        ("Never paste the token into a shared chat channel.", "Where can the token be pasted?"),
        ("Once installed, the agent reports every minute.", None),
        ("The agent doesn't restart on its own after a crash.", "Does the agent restart after a crash?"),
        ("Logs go to /var/log/agent, which the installer creates.", None),
        ("You cannot change the log folder after the first start.", "Can the log folder be changed later?"),
        ("Upgrades keep the configuration without asking.", None),
        ("Do not delete the state folder during an upgrade.", "What must not happen to the state folder?"),
    ],
    "leaflet": [
        ("Take one tablet in the morning with a glass of water.", None),
        ("Do not take more than two tablets in 24 hours.", "How many tablets may be taken in a day?"),
        ("The tablets may make you drowsy for an hour or two.", None),
        ("Never drive after taking the first dose.", "Can you drive after the first dose?"),
        ("Children under twelve should not take this medicine.", "Can children under twelve take it?"),
        ("Store the box in a cool, dry place.", None),
        ("The medicine is not safe with alcohol.", "Is the medicine safe with alcohol?"),
        ("If a dose is missed, take it when you remember.", None),
        ("Don't take a double dose to make up for a missed one.", "What to do about a missed dose?"),
        ("Pregnant women must not use it without asking a doctor.", "Can pregnant women use it?"),
    ],
    "travel": [
        ("The night train leaves the central station at 22:40 from platform 7.", None),
        ("Tickets bought on board are not accepted on this line.", "Can tickets be bought on board?"),
        ("Sleeping cars have two or four berths.", None),
        ("Pets are not allowed in the sleeping cars.", "Are pets allowed in the sleeping cars?"),
        ("Breakfast is served from 6:30 in the dining car.", None),
        ("The dining car doesn't accept cash.", "How can you pay in the dining car?"),
        ("Passengers without a reservation cannot board the sleeping cars.", "Who can board the sleeping cars?"),
        ("The train stops at the border for a passport check.", None),
        ("Bicycles travel free except on weekends.", "When do bicycles travel free?"),
        ("Smoking is never allowed on board.", "Is smoking allowed on board?"),
    ],
    "lab": [
        ("Every visitor signs in at the front desk and receives a badge.", None),
        ("Visitors may not enter the clean room without an escort.", "Can visitors enter the clean room alone?"),
        ("Lab coats and goggles hang by the door.", None),
        ("Never pour solvents down the sink.", "Where should solvents go?"),
        ("The fume hood isn't working this week.", "Is the fume hood working?"),
        ("Waste goes into the labelled drums in room 4.", None),
        ("Do not store food in the lab fridge.", "Can food be stored in the lab fridge?"),
        ("The freezer alarm rings when the door is open for a minute.", None),
        ("Nobody works alone in the lab after 20:00.", "Can someone work alone after 20:00?"),
        ("The spectrometer is no longer calibrated for infrared.", "Is the spectrometer calibrated for infrared?"),
    ],
    "lease": [
        ("The lease runs for twelve months from the first of March.", None),
        ("Rent is due on the fifth day of each month.", None),
        ("The tenant shall not sublet the flat.", "May the tenant sublet the flat?"),
        ("Small repairs are the tenant's to pay.", None),
        ("Pets are allowed except dogs over 20 kg.", "Which pets are not allowed?"),
        ("The deposit is not returned before the final inspection.", "When is the deposit returned?"),
        ("The landlord may enter with a day's notice.", None),
        ("Walls cannot be painted without written consent.", "Can the walls be painted?"),
        ("Heating is included in the rent.", None),
        ("Parking is no longer part of the lease.", "Is parking part of the lease?"),
    ],
    "deploy": [
        ("Deployments go out on weekdays between 10:00 and 16:00.", None),
        ("Never deploy on a Friday afternoon.", "Can you deploy on Friday afternoon?"),
        ("Each release needs two approvals in the review tool.", None),
        ("The database migration doesn't run automatically.", "Does the migration run automatically?"),
        ("Do not skip the canary stage.", "Can the canary stage be skipped?"),
        ("Rollbacks take about five minutes.", None),
        ("The old cluster is no longer receiving traffic.", "Does the old cluster receive traffic?"),
        ("Feature flags are cleaned up each quarter.", None),
        ("Secrets are never written to the build logs.", "Are secrets written to the build logs?"),
        ("Hotfixes cannot bypass the test suite.", "Can hotfixes bypass the tests?"),
    ],
    "hiking": [
        ("The ridge trail starts behind the mountain hut and takes about five hours.", None),
        ("Do not leave the marked path above the tree line.", "Can you leave the marked path?"),
        ("Water is available at the two springs on the map.", None),
        ("The upper spring isn't safe to drink without filtering.", "Is the upper spring safe to drink?"),
        ("Never start the ridge after 13:00 in summer.", "When is it too late to start the ridge?"),
        ("Storms build quickly in the afternoon.", None),
        ("The cable car no longer runs after 17:00.", "Does the cable car run in the evening?"),
        ("Dogs are welcome except on the via ferrata.", "Where are dogs not welcome?"),
        ("Mobile phones don't get a signal in the north valley.", "Do phones work in the north valley?"),
        ("The hut serves dinner at 18:30.", None),
        ("Camping is not permitted anywhere in the reserve.", "Is camping permitted in the reserve?"),
    ],
    "bank": [
        ("The new card arrives by post within ten days.", None),
        ("Never share your PIN with anyone, including bank staff.", "Who may know the PIN?"),
        ("Contactless payments work up to 50 euros.", None),
        ("The bank will never ask for your password by email.", "Does the bank ask for passwords by email?"),
        ("Transfers abroad are not free.", "Are transfers abroad free?"),
        ("Statements are available online every month.", None),
        ("The old card does not work after the new one is activated.", "Does the old card keep working?"),
        ("Cash withdrawals cannot exceed 500 euros a day.", "How much cash can be withdrawn daily?"),
        ("Overdrafts are not allowed unless agreed in writing.", "Are overdrafts allowed?"),
        ("Lost cards can be blocked in the app.", None),
    ],
    "kitchen": [
        ("The shared kitchen is open from 7:00 to 22:00.", None),
        ("Do not use metal pans on the induction plate by the window.", "Which pans can go on that plate?"),
        ("Clean the counter after cooking.", None),
        ("The dishwasher isn't for pots with burnt food.", "Can burnt pots go in the dishwasher?"),
        ("Never leave the oven on unattended.", "Can the oven be left on unattended?"),
        ("Labelled shelves in the fridge belong to each flat.", None),
        ("Unlabelled food is no longer kept after Friday.", "What happens to unlabelled food?"),
        ("The kettle has no automatic shut-off.", "Does the kettle switch itself off?"),
        ("Nobody may take food from another flat's shelf.", "Can you take food from another shelf?"),
        ("Recycling bins are emptied on Tuesdays.", None),
    ],
}
# "n't" words and the listed cues; "not" in "nothing" or "knot" is not a cue (word boundaries)
CUE = re.compile(r"(?i)\b(?:not|no|never|nobody|without|except|unless|cannot|\w+n't)\b")
GOVERNED = 3  # words after the cue that it governs (gistify.text.protect.NEGATED_WORDS)
# a kept "the" after a dropped "not" says nothing: only the content words among the governed ones are judged
FUNCTION_WORDS = {"the", "a", "an", "to", "of", "in", "on", "at", "for", "and", "or", "with", "by", "any"}
KEEPS = (0.3, 0.1)


@dataclass
class Item:
    """One negated sentence in its document: where its cue and the words it governs are."""

    doc: str
    question: str
    cue: tuple[int, int]
    governed: list[tuple[int, int]]


def documents() -> dict[str, tuple[str, list[Item]]]:
    """name -> (text, negated items with their character spans in the text)."""
    out = {}
    for name, sentences in DOCS.items():
        text, items = "", []
        for sentence, question in sentences:
            start = len(text) + (1 if text else 0)
            text = f"{text} {sentence}" if text else sentence
            if question is None:
                continue
            m = CUE.search(sentence)
            if m is None:
                raise ValueError(f"{name}: no negation in {sentence!r}")
            after = re.match(r"[^.,;:!?]*", sentence[m.end() :]).group()
            words = [(start + m.end() + w.start(), start + m.end() + w.end()) for w in re.finditer(r"[\w'/-]+", after)]
            words = [w for w in words[:GOVERNED] if text[w[0] : w[1]].lower() not in FUNCTION_WORDS] or words[:1]
            items.append(Item(name, question, (start + m.start(), start + m.end()), words))
        out[name] = (text, items)
    return out


def _inside(span: tuple[int, int], kept: list[tuple[int, int]]) -> bool:
    return any(s <= span[0] and span[1] <= e for s, e in kept)


def _touches(span: tuple[int, int], kept: list[tuple[int, int]]) -> bool:
    return any(s < span[1] and span[0] < e for s, e in kept)


def inverted(item: Item, kept: list[tuple[int, int]]) -> bool:
    """The cue dropped while a word it governs was kept."""
    return not _inside(item.cue, kept) and any(_touches(w, kept) for w in item.governed)


CONFIGS = {"defaults": {}, "before (raw cut)": {"protect_negations": False, "fallback": "off"}}


def run(keeps=KEEPS, method: str | None = None) -> list[dict]:
    """Every compression's record: config, keep, question or not, counts of items inverted and kept."""
    import gistify

    kw = {"method": method} if method else {}
    records = []
    docs = documents()
    for config, options in CONFIGS.items():
        for keep in keeps:
            for name, (text, items) in docs.items():
                asked = [(None, items)] + [(it.question, items) for it in items]
                for question, judged in asked:
                    t0 = time.perf_counter()
                    r = gistify.compress(text, question, keep=keep, **kw, **options)
                    bad = [it for it in judged if inverted(it, r.kept_spans)]
                    records.append({
                        "config": config, "keep": keep, "doc": name, "question": question,
                        "negations": len(judged), "inverted": len(bad),
                        "inverted_items": [text[it.cue[0] : it.governed[-1][1]] for it in bad],
                        "cue_kept": sum(_inside(it.cue, r.kept_spans) for it in judged),
                        "tokens_in": r.tokens_in, "tokens_out": r.tokens_out, "target": r.target_tokens,
                        "fell_back": r.fell_back, "fallback_step": r.fallback_step, "text": r.text,
                        "why": [x for x in r.notes if x.startswith("fell back")],
                        "seconds": time.perf_counter() - t0,
                    })  # fmt: skip
                    print(
                        f"{config:>16} keep {keep:g} {name:<10} {'q' if question else '-'} inverted {len(bad)}",
                        file=sys.stderr,
                    )
    return records


def table(records: list[dict]) -> str:
    """The markdown table: per config, keep and question or not."""
    head = (
        "| config | keep | question | compressions | negated sentences judged | inverted | cue kept | "
        "fallbacks (same budget: protected / clause dropped; higher keep; unchanged) | tokens out / budget | "
        "over budget |\n"
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|"
    )
    rows = [head]
    for config in CONFIGS:
        for keep in sorted({r["keep"] for r in records}, reverse=True):
            for asked in (False, True):
                rs = [
                    r for r in records if r["config"] == config and r["keep"] == keep and bool(r["question"]) == asked
                ]
                if not rs:
                    continue
                steps = [r["fallback_step"] or "" for r in rs]
                same = sum(s.startswith("compressed again at the same budget") for s in steps)
                cleared = sum(s.startswith("dropped the rest") for s in steps)
                higher = sum(s.startswith("compressed again at keep") for s in steps)
                unchanged = sum(s == "returned the text unchanged" for s in steps)
                judged = sum(r["negations"] for r in rs)
                ratio = sum(r["tokens_out"] for r in rs) / max(1, sum(r["target"] for r in rs))
                rows.append(
                    f"| {config} | {keep:g} | {'each sentence' if asked else 'none'} | {len(rs)} | {judged} | "
                    f"{sum(r['inverted'] for r in rs)} | {sum(r['cue_kept'] for r in rs)} | "
                    f"{sum(r['fell_back'] for r in rs)} ({same} / {cleared}; {higher}; {unchanged}) | {ratio:.3f} | "
                    f"{sum(r['tokens_out'] > r['target'] for r in rs)} |"
                )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gistify_bench.benches.negations", description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", default=",".join(map(str, KEEPS)), help="comma-separated keeps (default 0.3,0.1)")
    p.add_argument("--method", help="text method (default: gistify's default)")
    p.add_argument("--json", help="also write every record to this file")
    p.add_argument("--table-from", metavar="JSON", help="print the table of records written by --json, run nothing")
    args = p.parse_args(argv)
    if args.table_from:
        with open(args.table_from) as f:
            print(table(json.load(f)))
        return 0
    n = sum(len(items) for _, items in documents().values())
    print(f"{len(DOCS)} documents, {n} negated sentences", file=sys.stderr)
    records = run(tuple(float(k) for k in args.keep.split(",")), args.method)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    print(table(records))
    examples = [(r["config"], r["keep"], x) for r in records for x in r["inverted_items"]]
    for config, keep, x in examples[:12]:
        print(f"- {config}, keep {keep:g}: {x!r} lost its negation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
