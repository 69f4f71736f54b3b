"""A real one-node SLURM cluster for the tests, from Debian's packages.

``LocalSlurm(state_dir).start()`` installs slurmctld, slurmd, slurm-client,
munge, slurmdbd and mariadb-server if they are missing (Debian 12; as root),
writes ``slurm.conf`` from this machine's own ``hostname -s`` and ``slurmd -C``
with two fake GPUs (character devices aliasing /dev/null, so GPU requests
schedule on a CPU node), and starts munged, a private MariaDB on
127.0.0.1:13306, slurmdbd (so that ``sacct`` works: without accounting the
Snakemake plugin's status polling hangs), slurmctld and slurmd. The
configuration goes to /etc/slurm, where every client inside and outside jobs
finds it (files already there are restored by ``stop()``); state, logs and pid
files live under ``state_dir``. ``stop()`` stops exactly the daemons
``start()`` started. Settings that keep the tests fast are explained where
they are written.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

MARKER = "# written by tests/local_slurm.py"
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server")
DB_PORT = 13306
DB_PASSWORD = "slurmdbpass"


def run(*command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=check, capture_output=True, text=True, **kwargs)


def wait_until(condition, seconds: float, what: str) -> None:
    """Poll ``condition`` until it holds; TimeoutError naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not reached after {seconds:.0f} s")


def missing_packages() -> list[str]:
    missing = []
    for package in PACKAGES:
        status = run("dpkg-query", "-W", "-f=${Status}", package, check=False).stdout
        if "install ok installed" not in status:
            missing.append(package)
    return missing


def install() -> None:
    """apt-get install with a policy-rc.d that keeps the packages' init scripts
    from starting daemons (this machine has no systemd)."""
    missing = missing_packages()
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ("apt-get", "install", "-y", "--no-install-recommends", *missing)
    if run(*command, check=False, env=env).returncode != 0:
        run("apt-get", "update", env=env)
        run(*command, env=env)


class LocalSlurm:
    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir)
        self.etc = Path("/etc/slurm")
        self.conf = self.etc / "slurm.conf"
        self.started: list[tuple[str, Path]] = []  # (name, pid file)
        self.saved: dict[Path, bytes | None] = {}

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def _write(self, name: str, text: str) -> Path:
        path = self.etc / name
        if path not in self.saved:
            self.saved[path] = path.read_bytes() if path.exists() else None
        path.write_text(text)
        return path

    def _pid_file(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.pid"

    def _alive(self, name: str) -> bool:
        path = self._pid_file(name)
        if not path.exists():
            return False
        try:
            os.kill(int(path.read_text().strip()), 0)
            return True
        except (ValueError, ProcessLookupError):
            return False

    def _wait_for(self, what: str, condition, seconds: float = 30.0) -> None:
        wait_until(condition, seconds, f"local SLURM: {what} (logs in {self.dir / 'log'})")

    # -------------------------------------------------------------- config
    def _write_config(self) -> None:
        host = run("hostname", "-s").stdout.strip()
        detected = run("slurmd", "-C").stdout
        cpus = int(re.search(r"CPUs=(\d+)", detected).group(1))
        memory = int(re.search(r"RealMemory=(\d+)", detected).group(1)) - 1024  # above slurmd's figure drains the node
        for sub in ("run", "log", "state/ctld", "state/d", "dev", "mysql"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for index in range(2):
            device = self.dir / "dev" / f"gpu{index}"
            if not device.exists():
                os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))  # a character device: GRES rejects plain files
        shutil.chown(self.dir / "state" / "ctld", "slurm", "slurm")
        for path in (self.dir / "run", self.dir / "log"):
            path.chmod(0o777)
        self.etc.mkdir(exist_ok=True)
        self._write("slurm.conf", f"""{MARKER}
ClusterName=multisym
SlurmctldHost={host}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it can start again (default 120)
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=10
ReturnToService=2
# submitit ignores SIGTERM: a cancelled job would hold its CPUs for KillWait seconds
KillWait=5
MinJobAge=300
StateSaveLocation={self.dir}/state/ctld
SlurmdSpoolDir={self.dir}/state/d
SlurmctldPidFile={self._pid_file('slurmctld')}
SlurmdPidFile={self._pid_file('slurmd')}
SlurmctldLogFile={self.dir}/log/slurmctld.log
SlurmdLogFile={self.dir}/log/slurmd.log
JobCompType=jobcomp/none
# sacct shows the comment the Snakemake plugin sets (rule_<rule>_wildcards_...)
AccountingStoreFlags=job_comment
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} Gres=gpu:fakegpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        self._write("gres.conf",
                    f"AutoDetect=off\nNodeName={host} Name=gpu Type=fakegpu File={self.dir}/dev/gpu[0-1]\n")
        dbd = self._write("slurmdbd.conf", f"""AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile={self._pid_file('slurmdbd')}
LogFile={self.dir}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={DB_PORT}
StorageUser=slurm
StoragePass={DB_PASSWORD}
StorageLoc=slurm_acct_db
""")
        shutil.chown(dbd, "slurm", "slurm")
        dbd.chmod(0o600)
        self.host = host

    # ------------------------------------------------------------- daemons
    def _start_munge(self) -> None:
        if run("pgrep", "-x", "munged", check=False).returncode == 0:
            return  # someone else's munged serves us too; not ours to stop
        Path("/run/munge").mkdir(exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            run("runuser", "-u", "munge", "--", "mungekey", "--create")
        run("runuser", "-u", "munge", "--", "/usr/sbin/munged")
        self.started.append(("munged", Path("/run/munge/munged.pid")))

    def _start_mariadb(self) -> None:
        data = self.dir / "mysql"
        socket = self.dir / "run" / "mysql.sock"
        if not (data / "mysql").exists():
            shutil.chown(data, "mysql", "mysql")
            run("mariadb-install-db", "--user=mysql", f"--datadir={data}", "--auth-root-authentication-method=normal")
        pid = self.dir / "run" / "mariadbd.pid"
        subprocess.Popen(
            ["/usr/sbin/mariadbd", "--user=mysql", f"--datadir={data}", f"--port={DB_PORT}", "--bind-address=127.0.0.1",
             f"--socket={socket}", f"--pid-file={pid}", f"--log-error={self.dir}/log/mariadb.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self.started.append(("mariadbd", pid))
        self._wait_for("MariaDB", lambda: socket.exists())
        sql = (f"CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '{DB_PASSWORD}';"
               f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';"
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")
        self._wait_for("MariaDB accepting SQL",
                       lambda: run("mariadb", f"--socket={socket}", "-uroot", "-e", sql, check=False).returncode == 0)

    def _start_slurm(self, name: str, *args: str) -> None:
        run(f"/usr/sbin/{name}", *args, env=self.env)
        self.started.append((name, self._pid_file(name)))
        self._wait_for(name, lambda: self._alive(name))

    def _stop_leftovers(self) -> None:
        """Daemons of an earlier test cluster whose run was killed before it
        could stop them (its marker is still in /etc/slurm/slurm.conf): they
        hold the ports a new cluster needs."""
        if not self.conf.exists() or MARKER not in self.conf.read_text():
            return
        for name in ("slurmd", "slurmctld", "slurmdbd"):
            run("pkill", "-x", name, check=False)
        run("pkill", "-f", "mariadbd.*multisym-slurm-", check=False)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(
            run("pgrep", "-x", name, check=False).returncode == 0 for name in ("slurmd", "slurmctld", "slurmdbd")
        ):
            time.sleep(0.2)
        for name in ("slurm.conf", "gres.conf", "slurmdbd.conf"):
            (self.etc / name).unlink(missing_ok=True)

    def start(self) -> "LocalSlurm":
        install()
        self._stop_leftovers()
        self._write_config()
        self._start_munge()
        self._start_mariadb()
        self._start_slurm("slurmdbd")
        self._wait_for("slurmdbd port",
                       lambda: run("bash", "-c", "</dev/tcp/127.0.0.1/6819", check=False).returncode == 0)
        self._start_slurm("slurmctld")
        self._start_slurm("slurmd")
        self._wait_for("the node", self._node_idle, seconds=60)
        return self

    def _node_idle(self) -> bool:
        state = run("sinfo", "-h", "-o", "%T", env=self.env, check=False).stdout.strip()
        if state.startswith(("drain", "down", "inval")):
            run("scontrol", "update", f"nodename={self.host}", "state=resume", env=self.env, check=False)
        return state.startswith(("idle", "mixed", "allocated"))

    def stop(self) -> None:
        run("scancel", "--full", "--user=root", env=self.env, check=False)
        for name, pid_file in reversed(self.started):
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        self.started.clear()
        for path, content in self.saved.items():
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)
        self.saved.clear()
