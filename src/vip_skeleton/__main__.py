"""``python -m vip_skeleton`` runs the CLI."""

from vip_skeleton.cli import app

app(prog_name="vip-skeleton")
