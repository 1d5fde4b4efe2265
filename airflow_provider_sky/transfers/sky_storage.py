"""SkyTransferOperator: a verified, incremental bucket-to-bucket copy between any two stores."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_provider_sky.hooks.sky import SkyHook
from airflow_provider_sky.hooks.storage import SkyStorageHook, describe_options
from airflow_provider_sky.state.staging_cache import StateStagingCache
from airflow_provider_sky.state.store import StateStore
from airflow_provider_sky.storage import StorageError, TransferError, parse_uri, store_for
from airflow_provider_sky.storage.staging import (
    DEFAULT_LIFECYCLE_DAYS,
    SCHEME_OF_CLOUD,
    CostLimitError,
    StageResult,
    ensure_staging_bucket,
    stage,
    staging_bucket_name,
    staging_key,
    staging_uri,
)
from airflow_provider_sky.storage.transfer import EgressPriceFn, TransferEstimate

MiB = 1 << 20


def catalog_egress_price(
    src_cloud: str, src_region: str | None, dst_cloud: str, dst_region: str | None
) -> float | None:
    """USD/GB from the catalog's egress tables (first volume tier: errs high); None without a catalog.

    The default ``egress_price_per_gb`` of `SkyTransferOperator`; pass another callable to override."""
    try:
        from airflow_provider_sky.catalog.egress import Location, egress_price_per_gb
    except ImportError:  # catalog not installed/built: no price, no cost limit enforcement
        return None
    return egress_price_per_gb(Location(src_cloud, src_region), Location(dst_cloud, dst_region))


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


class SkyTransferOperator(BaseOperator):
    """Copy an object or prefix between s3://, gs://, az:// (or https://<account>.blob...) and file://.

    The copy is verified (sizes and MD5/CRC32C), incremental (identical objects are skipped, so a
    retry copies only what is missing) and logs its estimate (bytes, files, egress cost, ETA) before
    any byte moves, then the engine's progress lines (bytes, files, rate, ETA) every
    ``progress_interval`` seconds. Returns (XCom) a dict with the bytes/files copied and skipped,
    seconds, ``verified``, ``cost_usd`` and the final ``dest_uri``.

    :param source_uri: object or prefix to copy (templated).
    :param dest_uri: where to copy it (templated); or give ``dest_near_task`` instead.
    :param dest_near_task: task id of a sky task of this DAG: copy into the staging bucket of the
        region the run's stored plan put that task in (``sky-stage-<region>-<hash>``, created with a
        lifecycle when missing), under ``<scheme>/<bucket>/<key>`` of the source.
    :param source_conn_id / dest_conn_id: ``aws``, ``google_cloud_platform`` or ``wasb``
        connections; None: the SDK's default credential chain.
    :param delete_extraneous: delete destination objects absent from the source.
    :param max_cost_usd: refuse (before copying anything) when the estimated egress cost is higher.
    :param use_cache: skip the copy when the source listing's digest matches the one recorded at
        the last verified copy to the same destination (the destination is then not re-listed).
    :param lifecycle_days: expiry of objects in a staging bucket created by ``dest_near_task``.
    :param egress_price_per_gb: (src_cloud, src_region, dst_cloud, dst_region) -> USD/GB; default
        the catalog's prices (`catalog_egress_price`).
    :param sky_conn_id: the ``sky`` connection naming the state DB (plans, staging cache).
    """

    template_fields: Sequence[str] = (
        "source_uri",
        "dest_uri",
        "dest_near_task",
        "source_conn_id",
        "dest_conn_id",
    )
    ui_color = "#e3f1e0"

    def __init__(
        self,
        *,
        source_uri: str,
        dest_uri: str | None = None,
        dest_near_task: str | None = None,
        source_conn_id: str | None = None,
        dest_conn_id: str | None = None,
        delete_extraneous: bool = False,
        max_cost_usd: float | None = None,
        use_cache: bool = True,
        lifecycle_days: int | None = DEFAULT_LIFECYCLE_DAYS,
        egress_price_per_gb: EgressPriceFn | None = catalog_egress_price,
        sky_conn_id: str = SkyHook.default_conn_name,
        workers: int = 16,
        part_size: int = 16 * MiB,
        multipart_threshold: int = 64 * MiB,
        memory_budget: int = 512 * MiB,
        progress_interval: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (dest_uri is None) == (dest_near_task is None):
            raise ValueError("give exactly one of dest_uri= or dest_near_task=")
        for name, uri in (("source_uri", source_uri), ("dest_uri", dest_uri)):
            if uri and "{{" not in uri:
                try:
                    parse_uri(uri)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        if max_cost_usd is not None and max_cost_usd < 0:
            raise ValueError(f"max_cost_usd must be >= 0, got {max_cost_usd}")
        self.source_uri = source_uri
        self.dest_uri = dest_uri
        self.dest_near_task = dest_near_task
        self.source_conn_id = source_conn_id
        self.dest_conn_id = dest_conn_id
        self.delete_extraneous = delete_extraneous
        self.max_cost_usd = max_cost_usd
        self.use_cache = use_cache
        self.lifecycle_days = lifecycle_days
        self.egress_price_per_gb = egress_price_per_gb
        self.sky_conn_id = sky_conn_id
        self.engine_options = {
            "workers": workers,
            "part_size": part_size,
            "multipart_threshold": multipart_threshold,
            "memory_budget": memory_budget,
            "progress_interval": progress_interval,
        }
        self._cancel: threading.Event | None = None
        self._state: StateStore | None = None

    # ---- plumbing -----------------------------------------------------------------------
    def state_store(self) -> StateStore:
        if self._state is None:
            self._state = StateStore(SkyHook(self.sky_conn_id).get_settings().state_db_url)
        return self._state

    def _near_task(self, context: Any, dst_hook: SkyStorageHook) -> tuple[str, str, str | None, bool]:
        """(dest URI, cloud, region, staging) for ``dest_near_task``, from the run's stored plan."""
        ti = context["ti"]
        task = self.dest_near_task
        store = self.state_store()
        plan = store.get_plan(ti.dag_id, ti.run_id)
        if not plan and context.get("dag") is not None:
            # Staging usually runs before the task it feeds: plan the run's sky tasks now (stored,
            # so the sky tasks reuse this very plan).
            from airflow_provider_sky.operators.sky import sky_tasks_of

            tasks_, edges = sky_tasks_of(context["dag"])
            if tasks_:
                plan = SkyHook(self.sky_conn_id).core.plan_for_run(ti.dag_id, ti.run_id, tasks_, edges)
        if not plan:
            raise AirflowException(
                f"dest_near_task={task!r}: no optimizer plan is stored for DAG {ti.dag_id!r} run {ti.run_id!r} "
                f"in {store!r}. The plan is written when the run's sky tasks are placed; put this transfer "
                "after planning, or give dest_uri= explicitly."
            )
        tasks = plan.get("tasks") or {}
        placement = tasks.get(task)
        if not placement:
            raise AirflowException(
                f"dest_near_task={task!r} is not in the stored plan of run {ti.run_id!r} "
                f"(planned tasks: {sorted(tasks)}); name a sky task of this DAG"
            )
        cloud, region = placement.get("cloud"), placement.get("region")
        scheme = SCHEME_OF_CLOUD.get(cloud or "")
        if scheme is None:
            raise AirflowException(
                f"task {task!r} runs on {cloud!r}, which has no object store to stage into "
                f"(supported: {', '.join(SCHEME_OF_CLOUD)}); give dest_uri= explicitly"
            )
        if not dst_hook.cloud_matches(scheme):
            raise AirflowException(
                f"task {task!r} runs on {cloud}/{region}, but dest_conn_id={self.dest_conn_id!r} is not a "
                f"connection for {scheme}:// storage"
            )
        key = staging_key(self.source_uri)
        if scheme == "file":
            root = os.path.join(
                os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow"), "sky", "staging"
            )
            return staging_uri("local", "local", key, local_root=root), cloud, region, True
        account = dst_hook.account_identity(scheme)
        bucket = staging_bucket_name(cloud, region, account)
        azure_account = account if scheme == "az" else None
        return staging_uri(cloud, bucket, key, account=azure_account), cloud, region, True

    def _log_estimate(self, est: TransferEstimate) -> None:
        cost = f"${est.cost_usd:.4f}" if est.cost_usd is not None else "unknown (no egress price)"
        price = f" at ${est.price_per_gb}/GB" if est.price_per_gb is not None else ""
        self.log.info(
            "Estimate: %d objects / %s to copy (%d identical / %s skipped); egress %s%s (%s -> %s)%s; ETA %.1fs",
            est.files,
            _fmt_bytes(est.bytes),
            est.files_skipped,
            _fmt_bytes(est.bytes_skipped),
            cost,
            price,
            est.src_region or "?",
            est.dst_region or "?",
            " server-side" if est.server_side else "",
            est.seconds,
        )
        if self.max_cost_usd is not None and est.cost_usd is None:
            self.log.warning("max_cost_usd=%s is not enforced: no egress price is known", self.max_cost_usd)

    # ---- run ----------------------------------------------------------------------------
    def execute(self, context: Any) -> dict[str, Any]:
        src_hook = SkyStorageHook(self.source_conn_id)
        dst_hook = SkyStorageHook(self.dest_conn_id)
        region: str | None = None
        cloud: str | None = None
        staging = False
        dest_uri = self.dest_uri
        if self.dest_near_task:
            dest_uri, cloud, region, staging = self._near_task(context, dst_hook)
            self.log.info("Staging near task %r (%s/%s): %s", self.dest_near_task, cloud, region, dest_uri)
        assert dest_uri is not None
        self._cancel = threading.Event()
        try:
            src_options = src_hook.store_options(self.source_uri)
            dst_options = dst_hook.store_options(dest_uri)
        except ValueError as exc:
            raise AirflowException(str(exc)) from exc
        if staging and region and parse_uri(dest_uri).scheme == "az":
            dst_options.setdefault("region", region)
        self.log.info(
            "Copy %s (connection %s %s) -> %s (connection %s %s)",
            self.source_uri,
            self.source_conn_id or "default chain",
            describe_options(src_options),
            dest_uri,
            self.dest_conn_id or "default chain",
            describe_options(dst_options),
        )
        stores = [store_for(parse_uri(self.source_uri), **src_options)]
        try:
            stores.append(store_for(parse_uri(dest_uri), **dst_options))
            src_store, dst_store = stores
            if staging and cloud != "local":
                setup = ensure_staging_bucket(dst_store, region, self.lifecycle_days)
                self.log.info(
                    "Staging bucket %s (%s); lifecycle: %s",
                    setup.uri,
                    "created" if setup.created else "exists",
                    setup.lifecycle,
                )
            result = stage(
                self.source_uri,
                dest_uri,
                src_store=src_store,
                dst_store=dst_store,
                cache=StateStagingCache(self.state_store()) if self.use_cache else None,
                expire_after_days=self.lifecycle_days if staging else None,
                delete_extraneous=self.delete_extraneous,
                max_cost_usd=self.max_cost_usd,
                egress_price_per_gb=self.egress_price_per_gb,
                on_estimate=self._log_estimate,
                cancel_event=self._cancel,
                **self.engine_options,
            )
        except CostLimitError as exc:
            raise AirflowException(str(exc)) from exc
        except TransferError as exc:
            raise AirflowException(f"{exc}; {exc.report.summary()}") from exc
        except StorageError as exc:
            raise AirflowException(f"{type(exc).__name__}: {exc}") from exc
        finally:
            for store in stores:
                store.close()
        return self._result(result, dest_uri, cloud, region)

    def _result(
        self, result: StageResult, dest_uri: str, cloud: str | None, region: str | None
    ) -> dict[str, Any]:
        r = result.report
        if result.cache_hit:
            self.log.info(
                "Unchanged since the last verified copy (staging cache): %d objects / %s not re-copied",
                r.files_skipped,
                _fmt_bytes(r.bytes_skipped),
            )
        if not result.source_files:
            self.log.warning("The source %s holds no objects: nothing was copied", self.source_uri)
        est = r.estimate
        return {
            "source_uri": self.source_uri,
            "dest_uri": dest_uri,
            "dest_cloud": cloud or parse_uri(dest_uri).cloud,
            "dest_region": region if region is not None else (est.dst_region if est else None),
            "files_copied": r.files_copied,
            "files_skipped": r.files_skipped,
            "files_deleted": r.files_deleted,
            "bytes_copied": r.bytes_copied,
            "bytes_skipped": r.bytes_skipped,
            "seconds": round(r.seconds, 3),
            "verified": r.verified,
            "cost_usd": r.cost_usd,
            "estimated_cost_usd": est.cost_usd if est else None,
            "estimated_seconds": round(est.seconds, 3) if est else None,
            "server_side": r.server_side,
            "cache_hit": result.cache_hit,
        }

    def on_kill(self) -> None:
        """Stop scheduling copies; objects already verified stay (a retry skips them)."""
        if self._cancel is not None:
            self._cancel.set()
