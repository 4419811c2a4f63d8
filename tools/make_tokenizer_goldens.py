#!/usr/bin/env python3
"""Writes models/golden/prep/tok_{bpe,unigram}.json (tokenizer.json files trained here with
the Hugging Face `tokenizers` package: a byte-level BPE with `<s> $A </s>`, and a Unigram
with Metaspace and `[CLS] $A [SEP]`, each with a `<pad>` token and no padding settings)
and tok_{bpe,unigram}_ids.txt: the ids, attention mask and type ids Python's `tokenizers`
gives for the sentences of tok_sentences.txt with truncation to 16 tokens and padding to
16 with `<pad>`, one line per window (the first, then the overflowing ones):
`sentence<TAB>window<TAB>ids<TAB>mask<TAB>types`, values comma-separated.
runtime/tests/prep_text.rs compares edgetune's text front end with them.

Needs: pip install tokenizers==0.23.3. Run: python3 tools/make_tokenizer_goldens.py
"""
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "golden", "prep")
TOKENS = 16

CORPUS = """The striker scored twice in the second half and the home side won the match.
Our goalkeeper saved a penalty in the final minute of the cup tie.
The tennis champion came back from two sets down to win the final set.
Markets fell sharply after the central bank raised interest rates again.
The company reported higher profits as sales of its phones grew in Asia.
Investors moved money into bonds while oil prices rose for a third week.
Scientists found water ice in a crater near the moon's south pole.
A new telescope photographed galaxies that formed soon after the big bang.
The vaccine trial enrolled thousands of volunteers across four countries.
Voters went to the polls on Sunday in a closely fought election.
The parliament passed the budget after a long night of debate.
Rain is expected across the north, with snow on high ground by Friday.
""".splitlines()

SENTENCES = [
    "The striker scored twice.",
    "Markets fell after the bank raised rates, and bonds rallied.",
    "Scientists photographed ice near the pole; voters went to the polls on Sunday "
    "while the parliament passed the budget and markets rose for a third week.",
    "Unseen words: zygomorphic quartzite, naïve café — 42 € ✓",
    "",
]


def bpe():
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    return tok


def unigram():
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=200, special_tokens=["[CLS]", "[SEP]", "<pad>", "<unk>"],
                                      unk_token="<unk>")
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "tok_sentences.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(SENTENCES) + "\n")
    for name, make in [("bpe", bpe), ("unigram", unigram)]:
        tok = make()
        tok.save(os.path.join(OUT, f"tok_{name}.json"))
        tok.enable_truncation(max_length=TOKENS)
        tok.enable_padding(length=TOKENS, pad_id=tok.token_to_id("<pad>"), pad_token="<pad>")
        lines = []
        for i, s in enumerate(SENTENCES):
            e = tok.encode(s)
            for w, x in enumerate([e] + list(e.overflowing)):
                row = [x.ids, x.attention_mask, x.type_ids]
                lines.append(f"{i}\t{w}\t" + "\t".join(",".join(map(str, v)) for v in row))
        with open(os.path.join(OUT, f"tok_{name}_ids.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
