"""The benchmark's measurement functions (used by ``bench.run`` and the smoke test).

Three processes take part: this one runs the Xero/XPM simulator (so it can change practices
directly) and drives everything; moto server runs in its own process (``bench.moto_process``); and
every measured job (a worker invocation, the baseline, the dispatcher) runs in a fresh process
(``bench.job``), so the peak RSS reported is that job's alone.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from xpm_sync.domain.clock import iso

from bench.job import RESULT_PREFIX
from bench.moto_commands import SETTLE_COMMAND, SETTLED_ANSWER
from local.seed import seed_active_firm, seed_connection
from local.stack import StackNames, create_resources, function_environment, load_template
from local.xpm_sim import Practice, Simulator, generate_practice, start_simulator

ROOT = Path(__file__).resolve().parent.parent
REGION = "ap-southeast-2"
APP_CLIENT_ID = "local-client-id"
APP_CLIENT_SECRET = "local-client-secret"  # noqa: S105 - the simulator's fake app, not a secret
STAFF = 100
HANDLER_FUNCTIONS = ("sync_worker", "sync_dispatch", "api", "oauth")  # functions/<name>/app.py
LAMBDA_BUILD = ROOT / "build" / "bench-layer"
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": REGION,
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "XpmSyncBench",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_SERVICE_NAME": "xpm-sync-bench",
}


class JobFailed(RuntimeError):
    pass


@dataclass
class BenchFirm:
    size: int
    firm_id: str
    practice: Practice
    names: StackNames
    env: dict[str, str]
    office_code: str = "MEL"
    partner_user_ids: list[str] = field(default_factory=list)
    # XPM clients planted to fail (no partner, and no Default Partner on the office).
    failing_uuids: list[str] = field(default_factory=list)


@dataclass
class MotoHandle:
    """The moto server process: its URL, its pid (for its CPU time) and its command pipe."""

    url: str
    pid: int
    process: subprocess.Popen[str]

    def settle(self) -> None:
        """Have moto collect its garbage and freeze what it holds (``bench.moto_process``), and
        wait until it has: the next job's requests then pay for the objects they make, not for
        the garbage collector walking every item moto stores."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{SETTLE_COMMAND}\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer.startswith(SETTLED_ANSWER):
            raise JobFailed(f"moto server did not settle: {answer!r}")


@dataclass
class Bench:
    moto: MotoHandle
    sim: Simulator
    env: dict[str, str]
    firms: dict[str, BenchFirm] = field(default_factory=dict)

    @property
    def moto_url(self) -> str:
        return self.moto.url

    def resource(self) -> Any:
        return boto3.session.Session(region_name=REGION).resource("dynamodb", endpoint_url=self.moto_url)

    def client(self, service: str) -> Any:
        return boto3.session.Session(region_name=REGION).client(service, endpoint_url=self.moto_url)

    def table(self, name: str) -> Any:
        return self.resource().Table(name)

    def job(self, args: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run a job; adds the CPU seconds moto server and the simulator (this process) spent."""
        self.moto.settle()
        moto_before, here_before = process_cpu_seconds(self.moto.pid), time.process_time()
        result = run_job(args, env or self.env)
        result["moto_cpu_seconds"] = process_cpu_seconds(self.moto.pid) - moto_before
        result["simulator_cpu_seconds"] = time.process_time() - here_before
        return result

    def stack(self, prefix: str) -> tuple[StackNames, dict[str, str]]:
        """Resources of their own (tables, queues, secrets) and the functions' environment for them.

        moto answers a Query by walking every item of the table, so firms share no table here:
        otherwise a firm's reads would slow down with the other firms' items, which DynamoDB's
        don't.
        """
        names = create_resources(
            endpoint_url=self.moto_url,
            prefix=prefix,
            app_client_id=APP_CLIENT_ID,
            app_client_secret=APP_CLIENT_SECRET,
        )
        env = child_env(
            {"AWS_ENDPOINT_URL": self.moto_url, **function_environment(names, xero_url=self.sim.url)}
        )
        return names, env


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(_AWS_ENV)
    env["PYTHONPATH"] = f"{ROOT / 'layers' / 'shared'}{os.pathsep}{ROOT}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def run_job(args: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.job", json.dumps(args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    raise JobFailed(f"bench job {args['job']} failed ({done.returncode}):\n{done.stderr[-4000:]}")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def moto_process() -> Iterator[MotoHandle]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.moto_process"],
        cwd=ROOT,
        env=child_env({}),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("MOTO_URL "):
            raise JobFailed(f"moto server did not start: {line!r}")
        yield MotoHandle(url=line.split()[1], pid=process.pid, process=process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def bench_stack() -> Iterator[Bench]:
    """moto server (own process), the AWS resources of template.yaml and the simulator."""
    with ExitStack() as stack:
        moto = stack.enter_context(moto_process())
        sim = start_simulator()
        stack.callback(sim.stop)
        sim.register_app(APP_CLIENT_ID, APP_CLIENT_SECRET)
        saved = {k: os.environ.get(k) for k in [*_AWS_ENV, "AWS_ENDPOINT_URL"]}
        os.environ.update(_AWS_ENV)
        stack.callback(_restore_env, saved)
        yield Bench(moto=moto, sim=sim, env=child_env({"AWS_ENDPOINT_URL": moto.url}))


def _restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def add_firm(bench: Bench, size: int, *, staff: int = STAFF, failing_share: float = 0.0) -> BenchFirm:
    """A practice of ``size`` clients in the simulator, the firm seeded in Active and connected.

    With ``failing_share``, that share of its clients (spread evenly) has no partner in XPM, and
    the firm's default office no Default Partner: each of them fails (PARTNER_MISSING) until
    one is set (``set_default_partner``)."""
    label = "failing" if failing_share else "practice"
    practice = generate_practice(
        size + (1 if failing_share else 0),
        staff=staff,
        clients=size,
        problem_share=0,
        tenant_name=f"Bench {label} {size}",
    )
    failing = _spread(practice.clients, failing_share) if failing_share else []
    for client in failing:
        client.account_manager_uuid = None  # as generated, long ago: no modified time of now
    bench.sim.add_practice(practice)
    firm_id = f"bench-{size}" if not failing_share else f"bench-failing-{size}"
    names, env = bench.stack(firm_id)
    seeded = seed_active_firm(bench.table(names.active_table), firm_id, practice, hand_made_client=False)
    seed_connection(
        bench.table(names.config_table),
        bench.client("secretsmanager"),
        firm_id=firm_id,
        tenant_id=practice.tenant_id,
        tokens=bench.sim.issue_tokens(APP_CLIENT_ID),
        token_secret_prefix=names.token_secret_prefix,
        office_code=seeded.office_code,
    )
    firm = BenchFirm(
        size,
        firm_id,
        practice,
        names,
        env,
        office_code=seeded.office_code,
        partner_user_ids=list(seeded.partner_user_ids.values()),
        failing_uuids=[client.uuid for client in failing],
    )
    bench.firms[firm_id] = firm
    return firm


def _spread(clients: list[Any], share: float) -> list[Any]:
    """``share`` of ``clients``, spread evenly through the list (at least one)."""
    count = max(1, round(len(clients) * share))
    step = len(clients) / count
    return [clients[int(number * step)] for number in range(count)]


def force_full_read(bench: Bench, firm: BenchFirm) -> None:
    """Make the next run the daily full read (SPEC A7), without waiting a day."""
    bench.table(firm.names.config_table).update_item(
        Key={"firm_id": firm.firm_id}, UpdateExpression="REMOVE last_full_read_started_at"
    )


def set_default_partner(bench: Bench, firm: BenchFirm) -> str:
    """Fix the cause of the planted failures in Active alone: a Default Partner on the firm's
    default office (what the setup page or Admin Centre writes, SPEC A2). Returns the user's id."""
    user_id = firm.partner_user_ids[0]
    bench.table(firm.names.active_table).update_item(
        Key={"pk": f"FIRM#{firm.firm_id}", "sk": f"OFFICE#{firm.office_code}"},
        UpdateExpression="SET default_partner_user_id = :user",
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeValues={":user": user_id},
    )
    return user_id


def count_records(bench: Bench, firm: BenchFirm, prefix: str) -> int:
    """How many of the firm's Active items have a sort key starting with ``prefix`` (``USER#``...)."""
    table, count = bench.table(firm.names.active_table), 0
    request: dict[str, Any] = {
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
        "ExpressionAttributeValues": {":pk": f"FIRM#{firm.firm_id}", ":prefix": prefix},
        "Select": "COUNT",
    }
    while True:
        answer = table.query(**request)
        count += int(answer["Count"])
        if "LastEvaluatedKey" not in answer:
            return count
        request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


def change_clients(
    firm: BenchFirm,
    share: float = 0.01,
    *,
    offset: int = 0,
    modified_between: tuple[datetime, datetime] | None = None,
) -> int:
    """Rename ``share`` of the practice's clients in XPM, spread evenly; returns how many.

    ``offset`` moves the spread along (another hour renames other clients); ``modified_between``
    gives the renamed clients modified times spread evenly over that span (an hour of XPM edits),
    instead of now."""
    clients = firm.practice.clients
    count = max(1, round(len(clients) * share))
    step = len(clients) / count
    for number in range(count):
        client = clients[(int(number * step) + offset) % len(clients)]
        firm.practice.update_client(client.uuid, Name=f"{client.name} (renamed)")
        if modified_between is not None:
            start, end = modified_between
            client.modified_at = start + (end - start) * (number + 0.5) / count
    return count


HOUR = timedelta(hours=1)


def measure_firm_day(
    bench: Bench, firm: BenchFirm, *, hours: int = 24, share: float = 0.001
) -> list[dict[str, Any]]:
    """A day of hourly runs, each after ``share`` of the clients changed in XPM over the hour.

    The runs follow each other at once, so the hours are simulated: the day is laid in the past
    (it ends an hour before now, before any change the bench made in real time), each hour's
    changes get modified times spread over that hour, and before each run the firm's config says
    the last completed run began at the hour's start, as it would have. So each run asks XPM for
    what changed since that start less the sync's margin (SPEC A7): its hour's changes and the last
    minutes of the hour before, no more."""
    day_start = bench.sim.now() - (hours + 1) * HOUR
    config = bench.table(firm.names.config_table)
    runs: list[dict[str, Any]] = []
    for hour in range(hours):
        begin = day_start + hour * HOUR
        changed = change_clients(firm, share, offset=hour + 1, modified_between=(begin, begin + HOUR))
        config.update_item(
            Key={"firm_id": firm.firm_id},
            UpdateExpression="SET last_completed_run_started_at = :begin",
            ExpressionAttributeValues={":begin": iso(begin)},
        )
        result = measure_sync(bench, firm)
        result["changed"] = changed
        runs.append(result)
    return runs


FAILING_RUNS = ("first", "retry", "fixed")


def measure_failing_firm(
    bench: Bench, size: int, *, share: float = 0.2, staff: int = STAFF
) -> dict[str, Any]:
    """A firm whose ``share`` of clients fail (no partner in XPM, no Default Partner in Active):
    its first sync; the next hourly run, with nothing changed in XPM (the failed clients retried
    from the copies the sync kept); then the Default Partner set in Active and the run after."""
    firm = add_firm(bench, size, staff=staff, failing_share=share)
    runs: dict[str, dict[str, Any]] = {}
    runs["first"] = measure_sync(bench, firm, sizes=True)
    runs["retry"] = measure_sync(bench, firm, sizes=True)
    set_default_partner(bench, firm)
    runs["fixed"] = measure_sync(bench, firm, sizes=True)
    return {"firm_id": firm.firm_id, "clients": size, "failing": len(firm.failing_uuids), "runs": runs}


def _xpm_endpoint(path: str) -> str:
    api, _, rest = path.split("/3.1/", 1)[-1].partition("/")
    return f"{api}/{rest.split('/', 1)[0]}"


def measure_sync(
    bench: Bench, firm: BenchFirm, *, profile: str | None = None, sizes: bool = False
) -> dict[str, Any]:
    """One worker invocation for the firm, in a fresh process; the simulator's view of its calls.
    With ``sizes``, the job also reports the largest item it wrote to each table."""
    bench.sim.reset_calls()
    args: dict[str, Any] = {"job": "sync", "firm_id": firm.firm_id}
    if profile:
        args["profile"] = profile
    if sizes:
        args["sizes"] = True
    result = bench.job(args, firm.env)
    calls = [c for c in bench.sim.calls_to("/practicemanager/") if c.tenant_id == firm.practice.tenant_id]
    result["sim_xpm_calls"] = len(calls)
    result["sim_xpm_endpoints"] = dict(Counter(_xpm_endpoint(c.path) for c in calls))
    result["token_refreshes"] = len(bench.sim.calls_to("/connect/token"))
    records = sum(sum(by_outcome.values()) for by_outcome in result["counts"].values())
    result["records"] = records
    result["records_per_second"] = records / result["seconds"] if result["seconds"] else 0.0
    return result


def _sample_client_item(bench: Bench, firm: BenchFirm) -> dict[str, Any]:
    answer = bench.table(firm.names.active_table).query(
        KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
        ExpressionAttributeValues={":pk": f"FIRM#{firm.firm_id}", ":prefix": "CLIENT#"},
        Limit=1,
    )
    item: dict[str, Any] = answer["Items"][0]
    return {k: v for k, v in item.items() if k not in ("pk", "sk")}


def measure_baseline(bench: Bench, firm: BenchFirm, items: int) -> dict[str, Any]:
    """Download the firm's full client list (no parse) and batch-write ``items`` items (no mapping)."""
    secret = bench.client("secretsmanager").get_secret_value(
        SecretId=f"{firm.names.token_secret_prefix}{firm.firm_id}"
    )
    tokens = json.loads(secret["SecretString"])
    return bench.job(
        {
            "job": "baseline",
            "url": f"{bench.sim.url}/practicemanager/3.1/client.api/list",
            "access_token": tokens["access_token"],
            "tenant_id": firm.practice.tenant_id,
            "items": items,
            "item": _sample_client_item(bench, firm),
        },
        firm.env,
    )


ONE_VCPU_MB = 1769  # Lambda gives one full vCPU at this much memory, and CPU in proportion below it


def dispatcher_limits(template_path: Path = ROOT / "template.yaml") -> tuple[int, int]:
    """The dispatcher's timeout (seconds) and memory (MB), as template.yaml sets them."""
    template = load_template(template_path)
    props = template["Resources"]["SyncDispatchFunction"]["Properties"]
    defaults = template["Globals"]["Function"]
    return int(props.get("Timeout", defaults["Timeout"])), int(
        props.get("MemorySize", defaults["MemorySize"])
    )


def measure_dispatch(bench: Bench, firms: int) -> dict[str, Any]:
    """Seed ``firms`` enabled and connected config items in a stack of their own, then time the
    dispatcher queueing one message for each."""
    names, env = bench.stack(f"bench-dispatch-{firms}")
    with bench.table(names.config_table).batch_writer() as writer:
        for number in range(firms):
            writer.put_item(
                Item={
                    "firm_id": f"firm-{number:05d}",
                    "sync_name": "XPM sync",
                    "tenant_id": f"tenant-{number:05d}",
                    "default_office_code": "MEL",
                    "status": "connected",
                    "sync_enabled": True,
                }
            )
    timeout, memory_mb = dispatcher_limits()
    result = bench.job({"job": "dispatch", "timeout": timeout}, env)
    attributes = bench.client("sqs").get_queue_attributes(
        QueueUrl=names.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    result["firms"] = firms
    result["messages_on_queue"] = int(attributes["ApproximateNumberOfMessages"])
    result["timeout_seconds"] = timeout
    result["memory_mb"] = memory_mb
    # Its own CPU time as Lambda would give it at that memory: a floor for its duration in AWS.
    result["lambda_cpu_seconds"] = result["cpu_seconds"] * max(1.0, ONE_VCPU_MB / memory_mb)
    result["messages_per_second"] = result["queued"] / result["seconds"] if result["seconds"] else 0.0
    return result


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def _depth(match: re.Match[str]) -> int:
    # One space after the bar, then two per level of nesting.
    return (len(match.group(3)) - 1) // 2


def parse_importtime(stderr: str, module: str) -> tuple[float, list[tuple[str, float]]]:
    """Cumulative milliseconds of ``import <module>``: the top-level (unindented) lines of the
    module and its parent packages (whatever the handler imports is nested under them), and the
    heaviest imports one level down."""
    root = module.split(".")[0]
    total_us = 0
    nested: list[tuple[str, float]] = []
    # importtime prints a module after everything it imported, so children come first.
    pending: list[tuple[str, float]] = []
    for match in (_IMPORT_LINE.match(line) for line in stderr.splitlines()):
        if match is None:
            continue
        depth, name, cumulative = _depth(match), match.group(4), int(match.group(2))
        if depth == 1:
            pending.append((name, cumulative / 1000))
        elif depth == 0:
            if name == root or name.startswith(root + "."):
                total_us += cumulative
                nested.extend(pending)
            pending = []
    if total_us == 0:
        raise ValueError(f"no import of {module} in the importtime output")
    nested.sort(key=lambda pair: pair[1], reverse=True)
    return total_us / 1000, nested[:8]


def _is_project_module(name: str) -> bool:
    return name == "app" or name.split(".")[0] == "xpm_sync"


def project_self_ms(stderr: str) -> float:
    """Milliseconds the project's own modules took in one importtime trace: their self times (each
    module's code, with the library work its class statements cause, such as pydantic building a
    model), not the libraries they import. Taken in the same interpreter as the total, so the
    share holds however fast the machine runs at that moment."""
    return (
        sum(
            int(match.group(1))
            for match in (_IMPORT_LINE.match(line) for line in stderr.splitlines())
            if match is not None and _is_project_module(match.group(4))
        )
        / 1000
    )


def import_packages(modules: list[str]) -> list[str]:
    """The top-level packages of ``modules``, in first-seen order."""
    return list(dict.fromkeys(name.split(".")[0] for name in modules))


LIBRARIES_MODULE = "handler_libraries"
# Run in the handler's environment: the modules a statement loads, in the order their imports
# began, one per line. sys.modules cannot tell: importlib moves each module to its end once loaded.
_LOADED_MODULES = """\
import sys

class Recorder:
    names = []

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        cls.names.append(name)
        return None

sys.meta_path.insert(0, Recorder)
{statement}
sys.meta_path.remove(Recorder)
sys.stdout.write("\\n".join(name for name in dict.fromkeys(Recorder.names) if name in sys.modules))
"""


def modules_loaded_by(statement: str, *, cwd: Path, env: dict[str, str]) -> list[str]:
    """The modules ``statement`` loads in a fresh interpreter (``-S``, as Lambda), in the order
    their imports began."""
    done = subprocess.run(
        [sys.executable, "-S", "-s", "-c", _LOADED_MODULES.format(statement=statement)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


# The handlers pause the GC while they load and freeze what they built (functions/<name>/app.py);
# the bench's own modules that stand in for a handler do the same, so that both are timed alike.
GC_PAUSED_START = "import gc\n_collecting = gc.isenabled()\ngc.disable()\n"
GC_PAUSED_END = "gc.freeze()\nif _collecting:\n    gc.enable()\n"


def libraries_module_source(modules: list[str]) -> str:
    """A module that imports ``modules`` in this order: the order in which one ``import app`` began
    them, so each library finds the same others already loaded (Powertools' batch utility, for
    one, loads its parser models when pydantic is already there)."""
    names = "".join(f"    {name!r},\n" for name in modules)
    return (
        f"{GC_PAUSED_START}import importlib\n\n"
        f"for _name in (\n{names}):\n"
        "    try:\n"
        "        importlib.import_module(_name)\n"
        "    except ImportError:\n"
        "        pass  # a name some library registered under another (six.moves, say)\n"
        f"{GC_PAUSED_END}"
    )


def measure_library_imports(function: str, layer: Path, *, repeats: int = 9) -> dict[str, Any]:
    """Split the cold-start import of ``functions/<function>/app.py`` into the libraries it loads
    and the project's own modules.

    A module of the bench's own, next to the built ``app.py``, imports every module that one
    ``import app`` loads from outside the project, in the same order; the bench checks that it
    loads exactly those. The two imports are then timed in turns, each in a fresh interpreter, by
    the CPU time of the process (interpreter start included, the same in both), and the project's
    share is the median of the turns' differences: the project's modules with the library work
    they cause (pydantic building the project's models, the Tracer patching botocore). CPU time,
    not wall time: on a shared machine the wall time of one import moves by more than that share."""
    task = task_root(function, layer.parent)
    env = lambda_init_env(function, layer)

    def cpu_ms(statement: str) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-S", "-s", "-c", statement], cwd=task, env=env, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1000

    loaded = modules_loaded_by("import app", cwd=task, env=env)
    libraries = [name for name in loaded if not _is_project_module(name)]
    (task / f"{LIBRARIES_MODULE}.py").write_text(libraries_module_source(libraries))
    reloaded = set(modules_loaded_by(f"import {LIBRARIES_MODULE}", cwd=task, env=env)) - {LIBRARIES_MODULE}
    handler_ms: list[float] = []
    libraries_ms: list[float] = []
    for _ in range(repeats):
        handler_ms.append(cpu_ms("import app"))
        libraries_ms.append(cpu_ms(f"import {LIBRARIES_MODULE}"))
    return {
        "module": f"libraries of functions.{function}.app",
        "cpu_ms": statistics.median(libraries_ms),
        "runs_cpu_ms": [round(ms, 1) for ms in libraries_ms],
        "handler_cpu_ms": statistics.median(handler_ms),
        "handler_runs_cpu_ms": [round(ms, 1) for ms in handler_ms],
        "project_cpu_ms": statistics.median(h - lib for h, lib in zip(handler_ms, libraries_ms, strict=True)),
        "modules": len(libraries),
        # The layer's packages among them; the rest is the standard library.
        "packages": [
            package
            for package in import_packages(libraries)
            if (layer / package).is_dir() or (layer / f"{package}.py").is_file()
        ],
        # Both empty when the libraries module loads what import app loads, less the project.
        "not_loaded": sorted(set(libraries) - reloaded),
        "loaded_besides": sorted(reloaded - set(libraries)),
    }


STACK_FLOOR_MODULE = "stack_floor"
# What any worker on the chosen stack (README: Stack) imports before it does anything, and none of
# the project: a botocore client (DynamoDB, SQS, Secrets Manager), one pydantic model, httpx for
# XPM and Powertools' Logger. No Tracer, no batch utility, not even boto3 on top of botocore. It
# pauses the GC while it loads, as the handlers do.
STACK_FLOOR_SOURCE = f"""\
{GC_PAUSED_START}
import botocore.client
import botocore.session
import httpx
import pydantic
from aws_lambda_powertools import Logger


class Record(pydantic.BaseModel):
    name: str


logger = Logger(service="floor")
{GC_PAUSED_END}"""


def measure_stack_floor(layer: Path, *, repeats: int = 3) -> dict[str, Any]:
    """The import of ``STACK_FLOOR_SOURCE`` from the built layer, as the worker's is measured: the
    least a worker written on this stack can take on this machine, whatever its own code does."""
    task = task_root("sync_worker", layer.parent)
    (task / f"{STACK_FLOOR_MODULE}.py").write_text(STACK_FLOOR_SOURCE)
    return measure_import("sync_worker", layer, statement=f"import {STACK_FLOOR_MODULE}", repeats=repeats)


def build_layer(artifacts: Path = LAMBDA_BUILD) -> Path:
    """The shared layer as ``sam build`` makes it (``layers/shared/Makefile``: the requirements and
    xpm_sync, compiled to bytecode), with wheels for this machine so that it can be imported here."""
    shutil.rmtree(artifacts, ignore_errors=True)
    subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(ROOT / "layers" / "shared"),
            "build-SharedLayer",
            f"ARTIFACTS_DIR={artifacts}",
            "LAYER_WHEEL_PLATFORM=",
            f"LAYER_PYTHON={sys.executable}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    # Each function's code as Lambda has it in /var/task: app.py alone, with no bytecode that a
    # test run may have left in functions/<name>/__pycache__.
    for function in HANDLER_FUNCTIONS:
        task = task_root(function, artifacts)
        task.mkdir(parents=True)
        shutil.copy2(ROOT / "functions" / function / "app.py", task / "app.py")
    _install_runtime_boto3(runtime_root(artifacts))
    return artifacts / "python"


def _install_runtime_boto3(runtime: Path) -> None:
    """boto3 as the Lambda runtime has it in /var/runtime, beside the layer's botocore: the layer
    ships no boto3 and no handler imports it, but ``import boto3`` stays the bench's yardstick of
    this machine's speed, timed from here."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(runtime),
            "boto3",
            "s3transfer",
            "-c",
            str(ROOT / "layers" / "shared" / "constraints.txt"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", str(runtime)],
        check=True,
        capture_output=True,
    )


def runtime_root(artifacts: Path = LAMBDA_BUILD) -> Path:
    return artifacts / "runtime"


def task_root(function: str, artifacts: Path = LAMBDA_BUILD) -> Path:
    return artifacts / "task" / function


def lambda_init_env(function: str, layer: Path) -> dict[str, str]:
    """The environment a Lambda execution environment imports a handler in: the function's own
    directory, the layer and the runtime's boto3 on the path (none of this project's dev tools), the variables
    Lambda sets, and those template.yaml's Globals set (prod). Tracing is on, as in AWS."""
    task = task_root(function, layer.parent)
    return {
        "PATH": os.environ.get("PATH", ""),
        "LANG": "C.UTF-8",
        # Lambda's order: the function, the layer, then the runtime's own packages.
        "PYTHONPATH": os.pathsep.join([str(task), str(layer), str(runtime_root(layer.parent))]),
        "PYTHONDONTWRITEBYTECODE": "1",  # /var/task is read-only: app.py is compiled every time
        "LAMBDA_TASK_ROOT": str(task),
        "AWS_LAMBDA_FUNCTION_NAME": f"xpm-sync-{function}",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        **globals_environment(),
    }


def globals_environment(template_path: Path = ROOT / "template.yaml") -> dict[str, str]:
    """The variables template.yaml's Globals give every function, with prod's values for those
    the template looks up per environment."""
    variables = load_template(template_path)["Globals"]["Function"]["Environment"]["Variables"]
    fixed = {name: value for name, value in variables.items() if isinstance(value, str)}
    return {**fixed, "POWERTOOLS_LOG_LEVEL": "INFO"}


def measure_import(
    function: str, layer: Path, *, statement: str = "import app", repeats: int = 3
) -> dict[str, Any]:
    """Cold-start import of ``functions/<function>/app.py`` as Lambda does it, from the built
    layer: ``python -S -X importtime -c "import app"`` (``-S``: only the layer and the standard
    library, as in Lambda). The median of ``repeats`` fresh interpreters."""
    module = statement.removeprefix("import ").strip()
    runs: list[tuple[float, list[tuple[str, float]], float]] = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-S", "-s", "-X", "importtime", "-c", statement],
            cwd=task_root(function, layer.parent),
            env=lambda_init_env(function, layer),
            capture_output=True,
            text=True,
            check=True,
        )
        total, nested = parse_importtime(done.stderr, module)
        runs.append((total, nested, project_self_ms(done.stderr)))
    totals = [total for total, _, _ in runs]
    # The heaviest imports and the project's share are those of the median run itself.
    _, heaviest, project_ms = next(run for run in runs if run[0] == statistics.median_low(totals))
    return {
        "module": f"functions.{function}.app" if module == "app" else module,
        "ms": statistics.median(totals),
        "runs_ms": [round(t, 1) for t in totals],
        "heaviest": [{"module": name, "ms": round(ms, 1)} for name, ms in heaviest],
        "project_ms": round(project_ms, 1),
    }


def timed(func: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    value = func(*args, **kwargs)
    return value, time.monotonic() - started
