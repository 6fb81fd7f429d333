"""``perfsuite checkpoint``: check a GPT-2 checkpoint folder (``show``), or make a small trained one (``make-tiny``)."""

from __future__ import annotations

HELP = "check a Hugging Face GPT-2 checkpoint folder for --weights, or train a tiny one on synthetic text"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="read and hash a checkpoint folder: its label, config and SHA-256")
    show.add_argument("dir", metavar="DIR", help="folder with config.json and model.safetensors")
    make = sub.add_parser("make-tiny", help="train the tiny preset briefly on a synthetic Markov language and save "
                                            "it as a checkpoint folder (trained-like weights without a download)")
    make.add_argument("dir", metavar="DIR", help="folder to write (created; files in it are replaced)")
    make.add_argument("--steps", type=int, default=None, metavar="N",
                      help="Adam steps (default: 200, perfsuite.models.train_tiny.STEPS)")
    make.add_argument("--seed", type=int, default=0, help="seed of the weights, the chain and the batches (0)")


def run(args) -> int:
    from perfsuite.models.checkpoint import read_checkpoint, reference_state_dict, save_checkpoint
    from perfsuite.errors import PerfsuiteError

    if args.action == "make-tiny":
        from perfsuite.models.train_tiny import STEPS, train_tiny

        steps = STEPS if args.steps is None else args.steps
        if steps < 0:
            raise PerfsuiteError(f"--steps must be >= 0, not {steps}")
        trained = train_tiny(steps=steps, seed=args.seed)
        ckpt = save_checkpoint(trained.model, args.dir)
        print(f"trained {steps} steps: loss {trained.first_loss:.3f} → {trained.final_loss:.3f} nats/token "
              f"(the chain's entropy: {trained.entropy:.3f})")
    else:
        ckpt = read_checkpoint(args.dir)
        reference_state_dict(ckpt)  # every tensor present, of the right shape
    from perfsuite.table import printable

    c = ckpt.config
    print(printable(f"{ckpt.label}: GPT-2, {c.n_layer} layers, d = {c.n_embd}, {c.n_head} heads, "
                    f"vocab {c.vocab_size}, {c.n_positions} positions"))  # the label is the folder's name
    print(f"path:   {printable(ckpt.path)}\nsha256: {ckpt.sha256}")
    return 0
