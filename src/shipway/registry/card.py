"""Model cards: what the registry knows about a version, plus the human fields, as Markdown."""

from __future__ import annotations

from shipway.core.clock import iso
from shipway.registry.versions import CARD_FIELDS, ModelVersion

MISSING = "_Missing: not written yet._"
_TITLES = {
    "intended_use": "Intended use",
    "out_of_scope_use": "Out-of-scope use",
    "limitations": "Limitations",
    "ethical_considerations": "Ethical considerations",
    "caveats": "Caveats and recommendations",
    "owners": "Owners",
    "evaluation_notes": "Evaluation notes",
}
REQUIRED_HUMAN = ("intended_use", "limitations", "ethical_considerations")


def missing_fields(version: ModelVersion) -> list[str]:
    """Human-written card fields that are still empty."""
    return [f for f in REQUIRED_HUMAN if not version.card.get(f, "").strip()]


def render_card(version: ModelVersion) -> str:
    """The model card of a version as Markdown."""
    lin = version.lineage
    git = lin.get("git") or {}
    env = lin.get("environment") or {}
    lines = [
        f"# Model card: {version.name} version {version.version}",
        "",
        "## Model details",
        "",
        f"- **Name / version:** {version.name} / {version.version} (`{version.uri}`)",
        f"- **Status:** {version.status}; aliases: {', '.join(version.aliases) or 'none'}",
        f"- **Flavor / format:** {version.flavor} / {version.format}",
        f"- **Registered:** {iso(version.created_at)} by {version.created_by or 'unknown'}",
        f"- **Description:** {version.description or MISSING}",
        "",
    ]
    for key in CARD_FIELDS:
        if key in REQUIRED_HUMAN or version.card.get(key):
            lines += [f"## {_TITLES[key]}", "", version.card.get(key) or MISSING, ""]
    lines += ["## Metrics", ""]
    metrics = lin.get("metrics") or {}
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [
            f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in sorted(metrics.items())
        ]
    else:
        lines.append(MISSING.replace("not written yet", "no metrics were recorded for this version"))
    lines += ["", "## Training and evaluation data", ""]
    datasets = lin.get("datasets") or []
    if datasets:
        lines += [
            "| role | dataset | version | rows | target | content hash |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {d['role']} | {d['name']} | {d['version']} | {d['num_rows']} | {d.get('target') or '-'} | "
            f"`{d['content_hash'][:16]}` |"
            for d in datasets
        ]
    else:
        lines.append("_Missing: no datasets were linked to this version's run._")
    lines += [
        "",
        "## Lineage",
        "",
        f"- **Run:** {lin.get('run_id') or '_missing_'}"
        + (f" (experiment {lin.get('experiment')})" if lin.get("experiment") else ""),
        f"- **Git commit:** {git.get('commit') or '_missing_'}"
        + (" (uncommitted changes)" if git.get("dirty") else ""),
        f"- **Environment:** {env.get('hash', '_missing_')} ({env.get('packages', '?')} packages), "
        f"Python {lin.get('python') or '?'}",
        f"- **Missing lineage:** {', '.join(lin.get('missing') or []) or 'none'}",
        "",
        "## Signature",
        "",
    ]
    if version.schema:
        lines += ["| input | type | nullable | categories |", "| --- | --- | --- | --- |"]
        for col in version.schema["inputs"]:
            cats = ", ".join(col.get("categories") or []) or "-"
            lines.append(f"| {col['name']} | {col['type']} | {'yes' if col['nullable'] else 'no'} | {cats} |")
        out = version.schema.get("output") or {}
        if out:
            lines += [
                "",
                f"Output: {out.get('kind')} {out.get('dtype', '')} shape {out.get('shape', '')}".rstrip(),
            ]
    else:
        lines.append("_Missing: registered without an input example._")
    lines += [
        "",
        "## Integrity",
        "",
        f"- **Manifest digest:** `{version.manifest_digest}`",
        f"- **Signed:** {'yes, key ' + str(version.signing_key) if version.signed else 'no'}",
        f"- **Files:** {len(version.manifest)}",
        "",
    ]
    return "\n".join(lines)
