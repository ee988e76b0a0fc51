import shipway

PUBLIC = {
    "AlreadyExists",
    "Conflict",
    "GateFailed",
    "IntegrityError",
    "InvalidInput",
    "MissingDependency",
    "NotFound",
    "PermissionDenied",
    "Run",
    "RunRecord",
    "ShipwayError",
    "Unauthenticated",
    "Unavailable",
    "__version__",
    "active_run",
    "download_artifacts",
    "get_run",
    "list_experiments",
    "load_model",
    "log_dataset",
    "register_model",
    "set_alias",
    "metric_history",
    "search_runs",
    "seed",
    "start_run",
}


def test_public_names_are_pinned() -> None:
    assert set(shipway.__all__) == PUBLIC
    assert all(hasattr(shipway, name) for name in shipway.__all__)


def test_import_does_not_pull_in_heavy_modules() -> None:
    import subprocess
    import sys

    heavy = ("pandas", "pyarrow", "fastapi", "boto3")
    code = f"import sys, shipway; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
