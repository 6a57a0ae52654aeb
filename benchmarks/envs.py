"""Install the peers the benchmark compares against, each where its pins cannot clash (benchmarks/.peers/,
ignored).

  venv-ortgenai  onnxruntime-genai (its model builder needs transformers 5.x, onnx-ir: taken from the main
                 venv)
  venv-optimum   optimum-onnx[onnxruntime] (pins transformers < 4.58: its own copy shadows the main venv's)
  venv-llamacpp  llama-cpp-python's Python package from its PyPI sdist, bound to our own build of the
                 llama.cpp it carries (vendor/llama.cpp): llama-bench, llama-quantize, llama-perplexity,
                 llama-server (the serving peer, serving.py) and the shared libraries
A peer venv reaches the main venv's packages (torch, transformers, numpy, clova_edge itself) through a .pth
file that adds the main site-packages AFTER its own, so only what a peer pins is installed twice.

llama.cpp is built with -DGGML_NATIVE=OFF and each x86 feature switched on from what /proc/cpuinfo reports
(AMX always off: one of these VMs advertises AMX but faults on it). The build folder is keyed by those
switches, so a build made on another CPU is never reused; a tool added later (llama-server) is built into
the same folder, incrementally (SERVER_FLAGS are not part of the key). Each step leaves a stamp
and is skipped when its stamp exists; the seconds each install took go to .peers/install_seconds.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import sysconfig
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
LLAMA_TOOLS = ("llama-bench", "llama-quantize", "llama-perplexity", "llama-server")
LLAMA_TARGETS = (*LLAMA_TOOLS, "llama")
# What llama-server needs on top of the keyed flags of cmake_flags(): its CMake switch, and its web UI left
# out (the UI's assets would otherwise be downloaded at build time: there is no internet here, and the
# benchmark needs only the API). LLAMA_CURL (deprecated, ignored by this llama.cpp) and LLAMA_OPENSSL stay
# OFF (cmake_flags()).
SERVER_FLAGS = {"LLAMA_BUILD_SERVER": "ON", "LLAMA_BUILD_UI": "OFF", "LLAMA_USE_PREBUILT_UI": "OFF"}
# ggml's CMake switch -> the /proc/cpuinfo flags the CPU must report for it to be ON. Machines of "one kind"
# differ (an Intel Xeon with AVX-512 VNNI, an AMD EPYC with AVX2 only), so the build follows the CPU it runs
# on. AMX stays off whatever the CPU says: this VM's Xeon advertises AMX but faults on it (SIGILL on quantized
# models).
X86_FEATURES = {"GGML_AVX": ("avx",), "GGML_AVX2": ("avx2",), "GGML_FMA": ("fma",), "GGML_F16C": ("f16c",),
                "GGML_BMI2": ("bmi2",),
                # ggml's -mavx512* set
                "GGML_AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
                "GGML_AVX512_VNNI": ("avx512_vnni",), "GGML_AVX512_BF16": ("avx512_bf16",),
                "GGML_AVX512_VBMI": ("avx512vbmi",), "GGML_AVX_VNNI": ("avx_vnni",)}
NEVER_ON = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    line = next((x for x in cpuinfo.splitlines() if x.startswith("flags")), "")
    return set(line.split(":", 1)[1].split()) if ":" in line else set()


def x86_flags(flags: set[str]) -> dict[str, str]:
    """ggml's x86 switches for a CPU with `flags`: ON exactly where the CPU reports every needed feature."""
    out = {k: "ON" if all(f in flags for f in need) else "OFF" for k, need in X86_FEATURES.items()}
    out.update({k: "OFF" for k in NEVER_ON})
    return out


class InstallError(RuntimeError):
    """A peer could not be installed; the message names the step and its log file."""


@dataclass(frozen=True)
class LlamaCpp:
    build_bin: Path        # llama-bench, llama-quantize, llama-perplexity, llama-server and lib*.so
    source: Path           # vendor/llama.cpp (convert_hf_to_gguf.py)
    python: Path           # interpreter whose `import llama_cpp` uses build_bin's libllama

    @property
    def convert_script(self) -> Path:
        return self.source / "convert_hf_to_gguf.py"

    def tool(self, name: str) -> Path:
        return self.build_bin / name

    def env(self) -> dict[str, str]:
        return {**os.environ, "LLAMA_CPP_LIB_PATH": str(self.build_bin)}


def peers_dir() -> Path:
    return Path(__file__).resolve().parent / ".peers"


def _run(cmd: list[str], log: Path, *, cwd: Path | None = None, env: dict | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"$ {' '.join(map(str, cmd))}\n")
        f.flush()
        rc = subprocess.call(["nice", "-n", "10", *map(str, cmd)], stdout=f, stderr=subprocess.STDOUT,
                             cwd=cwd, env=env)
    if rc != 0:
        raise InstallError(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''} failed (exit {rc}); see {log}")


def _record(name: str, seconds: float) -> None:
    path = peers_dir() / "install_seconds.json"
    times = json.loads(path.read_text()) if path.is_file() else {}
    times[name] = round(seconds, 1)
    path.write_text(json.dumps(times, indent=1))


def install_seconds() -> dict[str, float]:
    path = peers_dir() / "install_seconds.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _site_packages(python: Path) -> str:
    out = subprocess.check_output([str(python), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    return out.decode().strip()


def peer_venv(name: str, packages: list[str], *, extra_paths: tuple[Path, ...] = ()) -> Path:
    """A venv at .peers/venv-NAME on top of the main venv (see module doc); returns its python."""
    root = peers_dir() / f"venv-{name}"
    python = root / "bin" / "python"
    stamp = root / ".installed"
    if stamp.is_file():
        return python
    t0 = time.perf_counter()
    log = peers_dir() / "logs" / f"venv-{name}.log"
    _run([sys.executable, "-m", "venv", root], log)
    main_site = sysconfig.get_paths()["purelib"]
    lines = [*map(str, extra_paths), f"import site; site.addsitedir({main_site!r})"]
    Path(_site_packages(python), "zz_clova_edge_main.pth").write_text("\n".join(lines) + "\n")
    if packages:
        _run([python, "-m", "pip", "install", "-q", *packages], log)
    stamp.touch()
    _record(f"venv-{name}", time.perf_counter() - t0)
    return python


def _fetch_sdist(log: Path) -> Path:
    src = peers_dir() / "src"
    found = sorted(src.glob("llama_cpp_python-*/vendor/llama.cpp/CMakeLists.txt"))
    if found:
        return found[-1].parents[2]
    src.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
          LLAMA_CPP_PYTHON, "-d", src], log)
    archive = next(src.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(src, filter="data")
    return next(src.glob("llama_cpp_python-*/vendor/llama.cpp/CMakeLists.txt")).parents[2]


def cmake_flags() -> list[str]:
    """The flags the build folder is keyed by (the CPU's switches and the fixed options). They still say
    LLAMA_BUILD_SERVER=OFF, as when the folder was first made: configure_flags() turns it on, so the key, and
    with it the folder already built, stay the same."""
    flags = {"CMAKE_BUILD_TYPE": "Release", "BUILD_SHARED_LIBS": "ON", "GGML_NATIVE": "OFF",
             "LLAMA_BUILD_TESTS": "OFF", "LLAMA_BUILD_EXAMPLES": "OFF", "LLAMA_BUILD_SERVER": "OFF",
             "LLAMA_BUILD_APP": "OFF", "LLAMA_OPENSSL": "OFF", "LLAMA_CURL": "OFF"}
    if platform.machine() in ("x86_64", "AMD64"):
        flags.update(x86_flags(cpu_flags()))
    return [f"-D{k}={v}" for k, v in flags.items()]


def configure_flags() -> list[str]:
    """cmake_flags() with SERVER_FLAGS in place of their keyed values: what `cmake -S ... -B ...` gets."""
    keyed = dict(f[2:].split("=", 1) for f in cmake_flags())
    return [f"-D{k}={v}" for k, v in {**keyed, **SERVER_FLAGS}.items()]


def install_llamacpp(jobs: int = 2) -> LlamaCpp:
    """Download the llama-cpp-python sdist, build its llama.cpp tools, set up the binding's venv."""
    log = peers_dir() / "logs" / "llamacpp.log"
    key = hashlib.sha256(" ".join(cmake_flags()).encode()).hexdigest()[:10]
    build = peers_dir() / f"llama-build-{key}"     # one build per CPU feature set (see module doc)
    t0 = time.perf_counter()
    sdist = _fetch_sdist(log)
    source = sdist / "vendor" / "llama.cpp"
    # a folder that lacks a tool is configured again and builds only what is missing (make is incremental)
    missing = [t for t in LLAMA_TOOLS if not (build / "bin" / t).exists()]
    if missing:
        what = "llama.cpp build" if not build.is_dir() else f"llama.cpp build (adding {', '.join(missing)})"
        _run(["cmake", "-S", source, "-B", build, *configure_flags()], log)
        _run(["cmake", "--build", build, "-j", str(jobs), "--target", *LLAMA_TARGETS], log)
        _record(what, time.perf_counter() - t0)
    python = peer_venv("llamacpp", ["diskcache>=5.6", "typing-extensions>=4.5"], extra_paths=(sdist,))
    return LlamaCpp(build / "bin", source, python)


def install_ortgenai() -> Path:
    return peer_venv("ortgenai", ["onnxruntime-genai"])


def install_optimum() -> Path:
    return peer_venv("optimum", ["optimum-onnx[onnxruntime]"])
