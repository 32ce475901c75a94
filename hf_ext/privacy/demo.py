"""``hf-ext demo`` row: SaMIA and the loss attack on a small built-in member / non-member set.

Members are famous public-domain passages that the default model has almost surely seen many times in pre-training;
non-members are passages written for hf-ext, of similar length and register. This shows the API end to end, not a
fair membership benchmark: famous-versus-new is exactly the kind of distribution shift that makes attacks look
strong (Duan et al., 2024). ``benchmarks/samia.py`` runs the controlled fine-tuning experiment.
"""

from __future__ import annotations

MEMBERS = (
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in Liberty, "
    "and dedicated to the proposition that all men are created equal. Now we are engaged in a great civil war, "
    "testing whether that nation, or any nation so conceived and so dedicated, can long endure.",
    "We the People of the United States, in Order to form a more perfect Union, establish Justice, insure domestic "
    "Tranquility, provide for the common defence, promote the general Welfare, and secure the Blessings of Liberty "
    "to ourselves and our Posterity, do ordain and establish this Constitution for the United States of America.",
    "We hold these truths to be self-evident, that all men are created equal, that they are endowed by their Creator "
    "with certain unalienable Rights, that among these are Life, Liberty and the pursuit of Happiness. That to "
    "secure these rights, Governments are instituted among Men, deriving their just powers from the consent of the "
    "governed.",
    "In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness "
    "was upon the face of the deep. And the Spirit of God moved upon the face of the waters. And God said, Let there "
    "be light: and there was light.",
    "Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex. Complex is "
    "better than complicated. Flat is better than nested. Sparse is better than dense. Readability counts. Special "
    "cases aren't special enough to break the rules. Although practicality beats purity.",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, "
    "it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it was the season of "
    "Darkness, it was the spring of hope, it was the winter of despair.",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore "
    "magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo "
    "consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a "
    "wife. However little known the feelings or views of such a man may be on his first entering a neighbourhood, "
    "this truth is so well fixed in the minds of the surrounding families.",
)

NON_MEMBERS = (
    "Nine winters and a long spring ago the river towns agreed, after much quarrelling over tolls and ferries, to "
    "share one harbour master between them. Today we gather on the old pier, under a grey and patient sky, to ask "
    "whether that fragile bargain can survive another season of floods.",
    "We the members of the Lakeside Allotment Society, in order to keep our paths clear, share the rainwater fairly, "
    "settle quarrels about stray pumpkins, and protect the bees from careless spraying, do adopt these rules for the "
    "gardens behind the railway station and the orchard beside the school.",
    "Quiet code is better than clever code. Logs are better than guesses. A failing test is better than a passing "
    "rumour. Small commits travel further than large ones. Name things after what they do, not after who wrote "
    "them. When in doubt, clear the cache and try again before asking.",
    "Permission to borrow the blue canoe is granted to any resident of the hostel who signs the yellow notebook, "
    "returns the paddles to the shed before dark, and reports any new scratches to the warden, who will not charge "
    "for damage caused by geese or by the wind.",
    "In the first week the engineers measured the tunnel, and the tunnel was longer than the drawings claimed. And "
    "the foreman said, let there be lamps every twenty paces: and there were lamps, though half of them flickered "
    "whenever the freight trains passed overhead.",
    "Marta repaired bicycles in a garage that smelled of oil and oranges. Every Thursday she left the door open so "
    "the neighbours' children could watch her true a wheel, and by the end of the summer three of them could "
    "replace a chain faster than she could.",
    "The committee reviewed the proposal for a footbridge over the canal and asked for a cheaper design, a wider "
    "deck for prams, and lighting that would not disturb the bats roosting under the old warehouse roof, before "
    "any money could be released by the council.",
    "Our kettle has outlived three landlords, two floods and one enthusiastic cousin who tried to descale it with "
    "vinegar and lemon juice at the same time. It still whistles slightly off key, which the cat seems to regard as "
    "a personal insult every single morning.",
)


def demo_texts() -> tuple[list[str], list[int]]:
    """The built-in texts and labels (1 = member)."""
    return list(MEMBERS) + list(NON_MEMBERS), [1] * len(MEMBERS) + [0] * len(NON_MEMBERS)


def demo_rows(model, tokenizer, ctx) -> list:
    from ..common.demo import DemoRow
    from .attacks import attack
    from .samia import SamiaConfig

    texts, labels = demo_texts()
    res = attack(model, tokenizer, texts, labels, methods=["loss", "samia"],
                 samia_config=SamiaConfig(num_samples=4, batch_size=64), progress=False)
    s, loss = res["samia"], res["loss"]
    return [DemoRow("privacy (SaMIA)", f"{len(MEMBERS)} famous vs {len(NON_MEMBERS)} new texts, 4 samples",
                    "AUROC", s.auroc, baseline=loss.auroc,
                    note=f"baseline: loss attack; {s.seconds:.0f} s; famous-vs-new is a distribution shift")]
