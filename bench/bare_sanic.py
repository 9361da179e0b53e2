"""The baseline for GET /instance (and, for bench/kbs.py, POST): a bare Sanic app answering a
constant JSON body."""

from __future__ import annotations

import argparse

from sanic import Request, Sanic
from sanic.response import HTTPResponse, json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = Sanic("bare_baseline")

    @app.route("/instance/<pubkey:str>", methods=["GET", "POST"])
    async def constant(request: Request, pubkey: str) -> HTTPResponse:
        return json({"ppid": "00" * 16, "operator": None, "owner": None})

    app.run(host="127.0.0.1", port=args.port, single_process=True, access_log=False)


if __name__ == "__main__":
    main()
