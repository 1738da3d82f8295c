"""``zoo synthesize``: research tooling (`zoo.tools`) behind the command line."""

from __future__ import annotations

import argparse

from zoo.cli.base import command

# Flite's English voices at 16 kHz (zoo.tools.tts.FLITE_VOICES; a test keeps the two equal):
# named here so that the parser is built without loading the synthesiser
FLITE_VOICES = ("slt", "rms", "awb", "kal16")


def _synthesize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="+", help="UTF-8 text files, a sentence per line")
    p.add_argument("--out", required=True, help="folder for wavs/ and transcripts.tsv")
    p.add_argument("--count", type=int, default=None, help="sentences drawn (default: all)")
    p.add_argument("--seed", type=int, default=0, help="sentence, voice, rate and pitch draws")
    p.add_argument("--language", default="en-us", help="eSpeak NG voice (default en-us)")
    p.add_argument("--flite", nargs="*", metavar="VOICE",
                   help=f"also read with these Flite voices (none given: {' '.join(FLITE_VOICES)}"
                        "); needs the flite program")
    p.add_argument("--flite-share", type=float, default=0.5,
                   help="share of the sentences Flite reads (default 0.5)")


@command("synthesize", "read text files aloud (eSpeak NG, Flite) into a speech manifest",
         arguments=_synthesize_args)
def cmd_synthesize(args: argparse.Namespace) -> int:
    from zoo.tools.tts import synthesize_corpus

    flite = FLITE_VOICES if args.flite == [] else args.flite or ()  # bare --flite: all voices
    stats = synthesize_corpus(args.texts, args.out, args.count, args.seed, args.language,
                              flite_voices=flite, flite_share=args.flite_share)
    print(f"{args.out}/transcripts.tsv: {stats['utterances']} utterances, "
          f"{stats['hours']:.2f} h ({stats['left_out']} lines with other characters left out)")
    return 0
