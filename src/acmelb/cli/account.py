"""``acmelb account register|show``: the account for one ACME directory."""

from __future__ import annotations

import argparse
from typing import Any

from acmelb.cli.common import add_ca_options, ca_config, print_json, state_dir


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "account", help="register or show the ACME account for a directory"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (
        ("register", "create the account (if needed) and show it"),
        ("show", "show the account URL and its key thumbprint"),
        ("profiles", "list the certificate profiles the CA offers (for issue --profile)"),
    ):
        child = actions.add_parser(action, help=text, description=text)
        add_ca_options(child, directory_required=True)
        child.add_argument("--json", action="store_true")
        child.set_defaults(run=run_profiles if action == "profiles" else run)


def run_profiles(args: argparse.Namespace) -> int:
    from acmelb.acme.ca import CAClient, new_account_key

    # the directory is public: no account is needed (nor made) to read it
    client = CAClient(ca_config(args), new_account_key())
    profiles = client.profiles()
    if args.json:
        print_json({"directory": client.config.directory_url, "profiles": profiles})
    elif not profiles:
        print(f"{client.config.directory_url} offers no profiles (its default only)")
    for name, description in sorted(profiles.items()):
        print(f"{name}: {description}")
    return 0


def run(args: argparse.Namespace) -> int:
    from acmelb.acme.ca import describe_account, open_account
    from acmelb.acme.store import Store

    store = Store(state_dir(args))
    client = open_account(store, ca_config(args), register=args.action == "register")
    account = describe_account(client, store)
    if args.json:
        print_json(
            {
                "uri": account.uri,
                "thumbprint": account.thumbprint,
                "contact": list(account.contact),
                "directory": account.directory_url,
                "key": str(account.key_path),
            }
        )
    else:
        print(
            f"account:    {account.uri}\nthumbprint: {account.thumbprint}\n"
            f"directory:  {account.directory_url}\nkey:        {account.key_path}"
        )
        if account.contact:
            print(f"contact:    {', '.join(account.contact)}")
    return 0
