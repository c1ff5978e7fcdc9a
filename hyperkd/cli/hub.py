"""``hyperkd hub push`` / ``hyperkd hub pull``: share models on the Hugging Face Hub
(thin layers over :func:`hyperkd.hub.push` and :func:`hyperkd.hub.pull`)."""

from pathlib import Path
from typing import Annotated

import typer

from hyperkd.cli.app import app, console

hub_app = typer.Typer(help="Publish and fetch models on the Hugging Face Hub.", no_args_is_help=True)
app.add_typer(hub_app, name="hub")


@hub_app.command("push")
def push_cmd(
    path: Annotated[Path, typer.Argument(help="A run folder (its student/ is pushed) or a model folder.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Target repo, org/name (created if missing).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Branch to push to (created if missing).")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="HF token (default: the logged-in one / HF_TOKEN).")
    ] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Commit message.")] = None,
) -> None:
    """Upload model.safetensors, config.json and README.md of a model folder in one commit."""
    from hyperkd.hub import push

    res = push(
        path,
        repo_id,
        private=True if private else None,
        revision=revision,
        token=token,
        commit_message=message,
    )
    where = res.repo_id + (f"@{res.revision}" if res.revision else "")
    console.print(f"[green]pushed[/] {', '.join(res.files)} to {where}: {res.commit_url}", highlight=False)
    console.print(f'load it with: hyperkd.from_pretrained("{where}")', highlight=False, markup=False)


@hub_app.command("pull")
def pull_cmd(
    repo_id: Annotated[str, typer.Argument(help="Repo id, org/name or org/name@revision.")],
    revision: Annotated[str | None, typer.Option("--revision", help="Branch, tag or commit.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also copy the files into this folder.")] = None,
    token: Annotated[str | None, typer.Option("--token", help="HF token for private or gated repos.")] = None,
) -> None:
    """Fetch a model into the HF cache (only its safetensors, config and card) and check it loads."""
    from hyperkd.hub import from_pretrained, pull, read_config

    folder = pull(repo_id, revision=revision, out=out, token=token)
    cfg = read_config(folder)
    model = from_pretrained(folder)  # proves the files load (safetensors only, strict)
    sensor = (cfg.get("sensor") or {}).get("name", "?")
    params = sum(p.numel() for p in model.parameters())
    console.print(
        f"[green]pulled[/] {repo_id} ({cfg['model_type']} for {sensor}, {params:,} parameters, "
        f"hyperkd {cfg.get('hyperkd_version')}) -> {folder}",
        highlight=False,
    )
