"""``tickgate feed ...``: info, convert, synth, from-lobster."""


def register(sub):
    p = sub.add_parser("feed", help="inspect, convert and generate feeds")
    fs = p.add_subparsers(dest="feed_command", required=True, metavar="FEED_COMMAND")

    def todo(args):
        raise NotImplementedError(f"tickgate feed {args.feed_command} is not implemented yet")

    for name in ("info", "convert", "synth", "from-lobster"):
        fs.add_parser(name).set_defaults(func=todo)
