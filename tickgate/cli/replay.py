"""``tickgate replay FEED``: replay a feed through the reference book (or the simulated chip)."""


def register(sub):
    p = sub.add_parser("replay", help="replay a feed and print top-of-book changes as CSV")

    def todo(args):
        raise NotImplementedError("tickgate replay is not implemented yet")

    p.set_defaults(func=todo)
