"""`sky-airflow cp` / `verify` as real subprocesses against the storage emulators (moto S3, Azurite)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.emulators import get_emulator, unique_name

MiB = 1 << 20
REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = ("sqlalchemy", "rich", "numpy", "scipy", "airflow", "yaml")
FORBIDDEN_OURS = ("provision", "optimizer", "state", "catalog", "clouds", "execution", "spec")
# Small parts so that the 7 MiB file goes through the multipart path.
ENGINE = ["--part-size", "5", "--multipart-threshold", "6", "--workers", "4", "--progress-interval", "0"]


def cli(*argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("SKY_SRC_OPTIONS", "SKY_DST_OPTIONS")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "airflow_provider_sky.cli.main", *argv],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=REPO,
        timeout=timeout,
    )


def report_of(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("cli-data")
    rng = random.Random(7)
    files = {f"d{i % 2}/f{i}.bin": rng.randbytes(1000 + i * 4099) for i in range(6)}
    files["big/blob.bin"] = rng.randbytes(7 * MiB + 5)  # two parts of 5 MiB
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root, files


@pytest.fixture(scope="module")
def s3():
    return get_emulator("s3")


@pytest.fixture(scope="module")
def azure():
    return get_emulator("azure")


def read_all(store, prefix: str) -> dict[str, bytes]:
    return {o.key[len(prefix) :]: store.read(o.key) for o in store.list(prefix)}


def test_local_to_s3_then_s3_to_azure_incremental_and_verify(dataset, s3, azure, tmp_path) -> None:
    root, files = dataset
    s3_store, az_store = s3.store(unique_name("cli")), azure.store(unique_name("cli"))
    s3_opts, az_opts = json.dumps(s3.options()), tmp_path / "az.json"
    az_opts.write_text(json.dumps(azure.options()))
    s3_uri, az_uri = s3_store.uri("data/"), az_store.uri("copy/")

    # local dir (file://) -> s3, options inline; progress lines on stderr
    first = cli("cp", f"file://{root}/", s3_uri, "--dst-options", s3_opts, "--json",
                *ENGINE[:-2], "--progress-interval", "0.05")  # fmt: skip
    rep = report_of(first)
    assert (rep["files"], rep["bytes"], rep["skipped"]) == (len(files), sum(map(len, files.values())), 0)
    assert rep["verified"] is True and rep["failed"] == [] and rep["error"] is None
    assert 0 < rep["budget_peak_mib"] <= 512 and rep["seconds"] > 0
    assert rep["peak_rss_mib"] is None or rep["peak_rss_mib"] > 10
    assert " MiB, " in first.stderr and "files" in first.stderr and "ETA" in first.stderr  # progress
    assert read_all(s3_store, "data/") == files

    # s3 -> azure, destination options from an @file, source options from the environment
    second = cli("cp", s3_uri, az_uri, "--dst-options", f"@{az_opts}", "--json", *ENGINE,
                 env={"SKY_SRC_OPTIONS": s3_opts})  # fmt: skip
    rep = report_of(second)
    assert (rep["files"], rep["skipped"], rep["verified"]) == (len(files), 0, True)
    assert read_all(az_store, "copy/") == files

    # a rerun copies nothing: every object is skipped as identical (human one-line summary)
    again = cli(
        "cp", s3_uri, az_uri, "--dst-options", f"@{az_opts}", *ENGINE, env={"SKY_SRC_OPTIONS": s3_opts}
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"copied 0 files (0.0 MiB), {len(files)} skipped")
    assert len(again.stdout.strip().splitlines()) == 1
    rerun = report_of(cli("cp", f"file://{root}/", s3_uri, "--dst-options", s3_opts, "--json", *ENGINE))
    assert (rerun["files"], rerun["bytes"], rerun["skipped"]) == (0, 0, len(files))

    # verify: all matched, then a changed destination object is reported and exits 1
    ok = cli("verify", s3_uri, az_uri, "--src-options", s3_opts, "--dst-options", f"@{az_opts}", "--json")
    assert report_of(ok) == {"ok": True, "matched": len(files), "missing": [], "mismatched": [],
                             "extra": [], "error": None}  # fmt: skip
    az_store.write("copy/d0/f0.bin", b"tampered")
    az_store.delete("copy/d1/f1.bin")
    bad = cli("verify", s3_uri, az_uri, "--src-options", s3_opts, "--dst-options", f"@{az_opts}")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "mismatched  d0/f0.bin" in bad.stdout and "missing     d1/f1.bin" in bad.stdout
    assert bad.stdout.strip().splitlines()[-1].startswith("FAILED: ")


def test_dry_run_copies_nothing_and_prints_the_estimate(dataset, s3) -> None:
    root, files = dataset
    store = s3.store(unique_name("dry"))
    result = cli(
        "cp", str(root) + "/", store.uri("x/"), "--dst-options", json.dumps(s3.options()), "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    total = sum(map(len, files.values()))
    assert result.stdout.startswith(f"dry run: would copy {len(files)} files ({total / MiB:.1f} MiB)")
    assert "nothing copied" in result.stdout
    assert list(store.list("")) == []
    rep = report_of(
        cli(
            "cp",
            str(root) + "/",
            store.uri("x/"),
            "--dst-options",
            json.dumps(s3.options()),
            "--dry-run",
            "--json",
        )
    )
    assert rep["dry_run"] is True and (rep["files"], rep["bytes"]) == (0, 0)
    assert (rep["estimate"]["files"], rep["estimate"]["bytes"]) == (len(files), total)
    assert list(store.list("")) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"endpoint_url": ', "--src-options: not valid JSON"),
        ('["a", "b"]', "--src-options: expected a JSON object"),
        ("@/nonexistent/opts.json", "--src-options: cannot read options file"),
        ('{"aws_secret_acess_key": "hunter2-secret"}', "does not accept option(s) 'aws_secret_acess_key'"),
    ],
)
def test_bad_src_options_exit_2_with_one_line(value: str, expected: str, tmp_path) -> None:
    result = cli("cp", "s3://some-bucket/x/", str(tmp_path / "out") + "/", "--src-options", value)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "hunter2" not in result.stderr + result.stdout


def test_bad_options_from_env_name_the_variable(tmp_path) -> None:
    result = cli("verify", str(tmp_path) + "/", "s3://b/x/", env={"SKY_DST_OPTIONS": "{nope"})
    assert result.returncode == 2 and "$SKY_DST_OPTIONS" in result.stderr and "--dst-options" in result.stderr
    assert "Traceback" not in result.stderr


def test_secrets_never_printed_even_on_failure(dataset, s3, azure) -> None:
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from tests.emulators import AZURITE_ACCOUNT, AZURITE_KEY

    root, _ = dataset
    secret = "s3cr3t-Value-Do-Not-Print/+="
    src = s3.store(unique_name("sec"))
    opts = {**s3.options(), "aws_secret_access_key": secret}  # moto accepts any secret
    ok = cli("cp", f"{root}/d0/", src.uri("d0/"), "--dst-options", json.dumps(opts), "--json", *ENGINE)
    assert report_of(ok)["files"] == 3
    # missing destination bucket -> exit 1 before anything is read
    missing = f"s3://{unique_name('missing')}/x/"
    gone = cli("cp", f"{root}/d0/", missing, "--dst-options", json.dumps(opts), "--json", *ENGINE)
    assert gone.returncode == 1, gone.stderr
    assert "does not exist" in gone.stderr and "does not exist" in json.loads(gone.stdout)["error"]
    # a read-only SAS at the destination: every object fails (403) -> exit 1, each one listed
    container = unique_name("ro")
    azure.store(container)
    sas = generate_container_sas(AZURITE_ACCOUNT, container, account_key=AZURITE_KEY,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=1))  # fmt: skip
    az_opts = {"account_url": f"{azure.endpoint}/{AZURITE_ACCOUNT}", "sas_token": sas}
    denied = cli("cp", src.uri("d0/"), azure.uri(container, "y/"), "--src-options", json.dumps(opts),
                 "--dst-options", json.dumps(az_opts), "--json", *ENGINE)  # fmt: skip
    assert denied.returncode == 1, denied.stderr
    rep = json.loads(denied.stdout)
    assert sorted(f["key"] for f in rep["failed"]) == ["f0.bin", "f2.bin", "f4.bin"]
    assert rep["verified"] is False and rep["files"] == 0
    assert sum(line.startswith("sky-airflow cp: failed f") for line in denied.stderr.splitlines()) == 3
    text = gone.stdout + gone.stderr + denied.stdout + denied.stderr + ok.stdout + ok.stderr
    signature = sas.split("sig=")[1].split("&")[0]
    for value in (secret, sas, signature, AZURITE_KEY):
        assert value not in text
    assert "Traceback" not in text


def test_redactor_hides_option_values_and_their_parts() -> None:
    from urllib.parse import quote

    from airflow_provider_sky.cli.transfer import _Redactor

    redact = _Redactor()
    key = "c2VjcmV0LWtleS12YWx1ZQ+/="
    redact.add_options({"connection_string": f"AccountName=acct;AccountKey={key};BlobEndpoint=http://h/acct",
                        "sas_token": "?sv=2024&sig=AbCd%2Bsig", "region": "eastus", "aws_secret_access_key": "xyzw1"})  # fmt: skip
    text = redact(f"bad {key} / {quote(key, safe='')} / sig=AbCd%2Bsig / xyzw1 in eastus for acct")
    assert key not in text and quote(key, safe="") not in text and "AbCd" not in text and "xyzw1" not in text
    assert "eastus" in text and "acct" in text  # public values stay readable
    assert redact.line("first\nsecond") == "first"


def test_cp_imports_only_the_storage_layer(dataset, s3, tmp_path) -> None:
    root, files = dataset
    store = s3.store(unique_name("lean"))
    code = textwrap.dedent(
        f"""
        import json, sys
        from airflow_provider_sky.cli.main import main
        rc = main(["cp", {str(root) + "/"!r}, {store.uri("l/")!r}, "--dst-options", {json.dumps(s3.options())!r},
                   "--progress-interval", "0", "--json"])
        print(json.dumps({{"rc": rc, "modules": sorted(sys.modules)}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0 and len(read_all(store, "l/")) == len(files)
    modules = out["modules"]
    assert "botocore" in modules and "airflow_provider_sky.storage.s3" in modules  # the check sees imports
    bad = [m for m in modules if m.split(".")[0] in FORBIDDEN]
    bad += [m for m in modules if m.split(".")[:2] in (["airflow_provider_sky", p] for p in FORBIDDEN_OURS)]
    assert bad == []


def test_help_and_parser_import_nothing_heavy() -> None:
    code = (
        "import sys; from airflow_provider_sky.cli.main import build_parser; build_parser(); "
        "print(sorted(m for m in sys.modules if m.startswith(('rich', 'sqlalchemy', 'yaml', 'numpy', "
        "'airflow_provider_sky.provision', 'airflow_provider_sky.state', 'airflow_provider_sky.spec', "
        "'airflow_provider_sky.storage'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_gc_parser_defaults_match_the_reaper() -> None:
    import argparse

    from airflow_provider_sky.cli.gc import add_gc_parser
    from airflow_provider_sky.provision import reaper

    parser = argparse.ArgumentParser()
    add_gc_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["gc"])
    assert args.grace == reaper.DEFAULT_GRACE.total_seconds() / 60
    assert args.min_age == reaper.DEFAULT_MIN_AGE.total_seconds() / 60


def test_gcs_both_ways_with_the_stores_verified(dataset, s3) -> None:
    """s3 -> gs -> file with `cp`, each leg checked by `verify` and by the bytes at the end."""
    root, files = dataset
    gcs = get_emulator("gcs")
    s3_store, gcs_store = s3.store(unique_name("cli")), gcs.store(unique_name("cli"))
    env = {"SKY_SRC_OPTIONS": json.dumps(s3.options()), "SKY_DST_OPTIONS": json.dumps(gcs.options())}
    report_of(
        cli(
            "cp",
            f"{root}/",
            s3_store.uri("in/"),
            "--dst-options",
            json.dumps(s3.options()),
            "--json",
            *ENGINE,
        )
    )
    to_gcs = report_of(cli("cp", s3_store.uri("in/"), gcs_store.uri("mid/"), "--json", *ENGINE, env=env))
    assert (to_gcs["files"], to_gcs["verified"], to_gcs["failed"]) == (len(files), True, [])
    assert (
        report_of(cli("verify", s3_store.uri("in/"), gcs_store.uri("mid/"), "--json", env=env))["ok"] is True
    )

    back = Path(root).parent / "from-gcs"
    env = {"SKY_SRC_OPTIONS": json.dumps(gcs.options())}
    out = report_of(cli("cp", gcs_store.uri("mid/"), f"file://{back}/", "--json", *ENGINE, env=env))
    assert out["files"] == len(files)
    assert {str(p.relative_to(back)): p.read_bytes() for p in back.rglob("*") if p.is_file()} == files
