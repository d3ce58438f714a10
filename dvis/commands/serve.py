"""``dvis serve``: the toolbox as a web page, for machines without a display (docs/web.md)."""
from __future__ import annotations


def register(subparsers) -> None:
    from dvis.commands.apps import add_settings_args, add_web_args, serve

    p = subparsers.add_parser("serve", help="serve the toolbox to a browser (remote GPU machines; docs/web.md)",
                              description="Serve the toolbox as a web page: the same settings, keys and panes "
                                          "as the window. Open the printed URL (through the printed ssh "
                                          "tunnel on a remote machine). Needs the web extra: "
                                          "pip install 'dvis[web]'.")
    add_settings_args(p)
    add_web_args(p)
    p.set_defaults(func=serve)
