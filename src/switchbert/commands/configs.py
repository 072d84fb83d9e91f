"""``switchbert configs``: list the packaged recipes and copy one out to edit (like ``tune ls`` / ``tune cp``).

    switchbert configs                     # every recipe, by group
    switchbert configs cp vqa/uniter my_vqa.yaml
    switchbert finetune my_vqa.yaml        # or straight from the package: switchbert finetune vqa/uniter
"""

from __future__ import annotations

import argparse
from itertools import groupby

from switchbert.recipes import copy_recipe, recipe_names, recipe_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("configs", help="list the packaged experiment recipes, or copy one out to edit",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=("ls", "cp", "show"), default="ls",
                   help="ls (default): list; cp NAME DEST: copy a recipe; show NAME: print it")
    p.add_argument("name", nargs="?", help="recipe name, e.g. vqa/uniter")
    p.add_argument("dest", nargs="?", help="cp: destination file or directory (default: NAME's file name here)")
    p.add_argument("--force", action="store_true", help="cp: overwrite an existing file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "ls":
        names = recipe_names()
        for group, items in groupby(names, key=lambda n: n.split("/")[0]):
            print(f"{group + '/':<11}" + "  ".join(n.split("/", 1)[1] for n in items))
        print(f"\n{len(names)} recipes. Run one by name (switchbert finetune vqa/uniter) or copy it out: "
              "switchbert configs cp vqa/uniter my.yaml")
        return 0
    if not args.name:
        raise ValueError(f"configs {args.action} needs a recipe NAME (switchbert configs lists them)")
    if args.action == "show":
        print(recipe_path(args.name).read_text(encoding="utf-8"), end="")
        return 0
    dest = copy_recipe(args.name, args.dest or ".", force=args.force)
    print(f"wrote {dest}")
    return 0
