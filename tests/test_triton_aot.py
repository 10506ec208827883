"""The fused SE kernels compiled ahead of time for Ampere (sm_80) and Hopper (sm_90) with Triton's
bundled ptxas, no GPU needed (docs/performance.md).

The specialisations are not listed by hand: the launchers of :mod:`senet.layers.fused_se` run on
meta tensors of SE-ResNet-50's and SE-ResNeXt-50's unit shapes (read from the models themselves at
batch 128, 224x224), forward and backward, with the launch step recording each planned launch
instead of running it; Triton's own argument binder then specialises each plan exactly as a launch
on a GPU would. Every specialisation must compile; accesses of full-size tensors must be vector
loads/stores (a scalar ``ld.global.b16`` there is a quarter of the bandwidth at best); the target
configuration (bf16, channels_last) must not spill. ``pytest -s`` prints registers and spills.
The full matrix (3 dtypes x 2 layouts x training/inference x SE/plain x 2 models x 2 targets) is
``slow``; the default tier compiles the target configuration of SE-ResNet-50 for sm_90 and its
fp32 NCHW units for sm_80.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402

from fused_cases import dispatched, unit_shapes  # noqa: E402
from senet.layers import _triton_se as K  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Pointer arguments that address a full-size (N, C, H, W) tensor, per kernel: these must be walked
# with vector accesses. The others hold one value per (n, c) (s, grad_z, partial sums).
FULL_SIZE = {
    "_squeeze_kernel": {"u_ptr"},
    "_finish_kernel": set(),
    "_apply_kernel": {"u_ptr", "r_ptr", "y_ptr"},
    "_backward_kernel": {"g_ptr", "y_ptr", "u_ptr", "gp_ptr", "gu_ptr"},
    "_grad_u_kernel": {"gp_ptr", "gu_ptr"},
}


def _jit(kernel) -> JITFunction:
    # Under TRITON_INTERPRET=1 (the CPU test run) @triton.jit gives an interpreted function; the
    # compiler wants the JITFunction of the same Python source.
    return kernel if isinstance(kernel, JITFunction) else JITFunction(kernel.fn)


@functools.lru_cache(maxsize=None)
def _binder(kernel, arch: int):
    fn = _jit(kernel)
    backend = make_backend(GPUTarget("cuda", arch, 32))
    return fn, backend, create_function_from_signature(fn.signature, fn.params, backend)


def specialise(plan: K.Launch, arch: int):
    """(key, compile source, options) of a plan, as Triton's launcher would specialise it."""
    fn, backend, binder = _binder(plan.kernel, arch)
    bound, spec, opts = binder(*plan.args, **plan.constexprs, num_warps=plan.num_warps)
    options, signature, constexprs, attrs = fn._pack_args(backend, {"num_warps": plan.num_warps}, bound, spec, opts)
    key = (plan.name, arch, plan.num_warps, tuple(signature.items()), tuple(sorted(constexprs.items())),
           tuple(sorted((k, str(v)) for k, v in attrs.items())))
    return key, ASTSource(fn, signature, constexprs, attrs), options, signature


_COMPILED: dict[tuple, dict] = {}


def compile_plans(plans: list[K.Launch], arch: int) -> list[dict]:
    """Compile plans for sm_``arch`` (each specialisation once per session); their reports, in order.

    The compiler runs in a child process without ``TRITON_INTERPRET``: a Triton imported under the
    interpreter (as this CPU test run is) builds its own library functions (``tl.sum``'s combine
    function, ...) as interpreted ones, which the code generator cannot use.
    """
    specs = [specialise(p, arch) for p in plans]
    todo = {key: (src, options) for key, src, options, _ in specs if key not in _COMPILED}
    if todo:
        jobs = [dict(kernel=src.fn.__name__, arch=arch, signature=src.signature,
                     constexprs=[[list(k), v] for k, v in src.constants.items()],
                     attrs=[[list(k), v] for k, v in src.attrs.items()], num_warps=options.num_warps)
                for src, options in todo.values()]
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        done = subprocess.run([sys.executable, __file__], input=json.dumps(jobs), capture_output=True, text=True,
                              env=env)
        assert done.returncode == 0, f"compilation failed:\n{done.stderr[-4000:]}"
        for key, rep in zip(todo, json.loads(done.stdout.splitlines()[-1])):
            _COMPILED[key] = rep
    out = []
    for (key, _src, _options, signature), plan in zip(specs, plans):
        rep = dict(_COMPILED[key])
        params = [k for k, v in signature.items() if v != "constexpr"]
        rep["scalar"] = scalar_accesses(rep["ptx"], plan.name, params)
        out.append(rep)
    return out


def compile_plan(plan: K.Launch, arch: int) -> dict:
    return compile_plans([plan], arch)[0]


def _compile_jobs(jobs: list[dict]) -> list[dict]:
    """In the child: compile each job with Triton's compiler and bundled ptxas."""
    reports = []
    for job in jobs:
        fn = getattr(K, job["kernel"])
        target = GPUTarget("cuda", job["arch"], 32)
        src = ASTSource(fn, job["signature"], {tuple(k): v for k, v in job["constexprs"]},
                        {tuple(k): v for k, v in job["attrs"]})
        options = make_backend(target).parse_options({"num_warps": job["num_warps"]})
        ptx = triton.compile(src, target=target, options=options.__dict__).asm["ptx"]
        reports.append(dict(name=job["kernel"], arch=job["arch"], ptx=ptx, **ptxas_usage(ptx, job["arch"])))
    return reports


def ptxas_usage(ptx: str, arch: int) -> dict[str, int]:
    """Registers and spill bytes from Triton's bundled ptxas (``-v``), with Triton's own flags."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.ptx"
        path.write_text(ptx)
        log = subprocess.run([get_ptxas(arch).path, "-v", "--regAllocOptLevel=2",
                              f"--gpu-name={sm_arch_from_capability(arch)}", str(path), "-o", str(path) + ".o"],
                             capture_output=True, text=True, check=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", log)]
    return {"registers": int(regs.group(1)) if regs else 0, "spill_bytes": sum(spills)}


_INSTR = re.compile(r"^\s*(?:@!?%\w+\s+)?([\w.]+)\s+(.*?);", re.M)


def scalar_accesses(ptx: str, name: str, params: list[str]) -> list[str]:
    """Global loads/stores of full-size tensors that are not vector accesses (``.v2``/``.v4``).

    Each access's address register is traced back through the PTX to the pointer parameter it is
    computed from, so per-(n, c) accesses (which may be scalar) are told apart from the rest.
    """
    defs: dict[str, list[str]] = {}
    param_of: dict[str, str] = {}
    accesses: list[tuple[str, str]] = []
    for op, operands in _INSTR.findall(ptx):
        if op.startswith("ld.param"):
            dst, src = operands.split(",", 1)
            index = int(re.search(r"_param_(\d+)", src).group(1))
            if index < len(params):
                param_of[dst.strip()] = params[index]
            continue
        regs = re.findall(r"%\w+", operands)
        if op.startswith(("ld.global", "st.global")):
            addr = re.search(r"\[\s*(%\w+)", operands).group(1)
            accesses.append((op, addr))
        elif regs and not op.startswith(("st.", "bra", "bar", "setp")):
            defs.setdefault(regs[0], []).extend(regs[1:])

    def roots(reg: str) -> set[str]:
        seen, stack, out = set(), [reg], set()
        while stack:
            r = stack.pop()
            if r in seen:
                continue
            seen.add(r)
            if r in param_of:
                out.add(param_of[r])
            stack.extend(defs.get(r, []))
        return out

    full = FULL_SIZE[name]
    return [op for op, addr in accesses if roots(addr) & full and not re.search(r"\.v\d", op)]


CONFIGS = [(dt, cl, train, se) for dt in DTYPES for cl in (False, True) for train in (False, True)
           for se in (True, False)]


def inventory(names, dtypes, layouts) -> list[tuple[str, K.Launch]]:
    """(description, plan) of every launch the launchers plan for these models and settings."""
    out = []
    for name in names:
        for shape in unit_shapes(name):
            for dt, cl, train, se in CONFIGS:
                if dt in dtypes and cl in layouts:
                    for plan in dispatched(shape, DTYPES[dt], cl, train, se):
                        out.append((f"{name} {shape[1]}x{shape[2]}^2 {dt} {'NHWC' if cl else 'NCHW'} "
                                    f"{'train' if train else 'infer'} {'SE' if se else 'plain'}", plan))
    return out


def check(names, dtypes, layouts, archs) -> None:
    rows, failures = [], []
    plans = inventory(names, dtypes, layouts)
    assert plans, "no launch planned"
    for what, plan in plans:
        assert plan.name in FULL_SIZE, f"{plan.name}: a kernel this test does not know; list its full-size pointers"
    for arch in archs:
        for (what, plan), rep in zip(plans, compile_plans([p for _, p in plans], arch)):
            target = "bf16 NHWC" in what
            rows.append(f"sm_{arch} {plan.name:<18} {what:<48} regs {rep['registers']:>3}  spill {rep['spill_bytes']}")
            if rep["scalar"]:
                counts = dict(collections.Counter(rep["scalar"]))
                failures.append(f"{what} sm_{arch} {plan.name}: scalar accesses of full-size tensors {counts}")
            if target and rep["spill_bytes"]:
                failures.append(f"{what} sm_{arch} {plan.name}: spills {rep['spill_bytes']} bytes")
    print("\n" + "\n".join(dict.fromkeys(rows)))
    assert not failures, "\n".join(failures)


def test_target_configuration_compiles_vectorised_without_spills():
    """SE-ResNet-50, bf16 channels_last, every unit, training and inference, SE and plain, sm_90."""
    check(["se_resnet50"], ["bf16"], [True], [90])


@pytest.mark.slow
def test_nchw_fp32_compiles_for_ampere():
    """The NCHW units the launchers dispatch (56x56, 28x28: H*W a multiple of 16) compile vectorised for sm_80."""
    check(["se_resnet50"], ["fp32"], [False], [80])


def test_nchw_at_14_and_7_is_not_dispatched():
    """H*W = 196 and 49 in NCHW would compile to scalar accesses: the launchers plan no launch there."""
    for hw in (14, 7):
        for train in (False, True):
            assert dispatched((128, 1024, hw, hw), torch.bfloat16, False, train, True) == []


def test_the_check_fails_when_the_dispatch_admits_a_scalar_layout(monkeypatch):
    """A broken dispatch that lets every layout through: the check reports the scalar accesses."""
    monkeypatch.setattr(K, "vectorisable", lambda t, address=True: True)
    with pytest.raises(AssertionError, match=r"1024x14\^2 bf16 NCHW .* scalar accesses of full-size tensors"):
        check(["se_resnet50"], ["bf16"], [False], [90])


def test_a_scalar_kernel_is_caught():
    """The check fails on scalar code: the apply kernel planned directly (bypassing the dispatch)
    for NCHW 14x14 compiles to scalar 2-byte accesses, which the check reports."""
    u = torch.empty((128, 1024, 14, 14), dtype=torch.bfloat16, device="meta")
    s = torch.empty((128, 1024), dtype=torch.bfloat16, device="meta")
    rep = compile_plan(K.plan_apply(u, s, u, u, relu=True), 90)
    assert rep["scalar"] and all(op.endswith((".b16", ".u16")) for op in rep["scalar"]), rep["scalar"]
    good = compile_plan(K.plan_apply(u.contiguous(memory_format=torch.channels_last), s,
                                     u.contiguous(memory_format=torch.channels_last),
                                     u.contiguous(memory_format=torch.channels_last), relu=True), 90)
    assert good["scalar"] == [] and re.search(r"ld\.global(\.\w+)*\.v4", good["ptx"])


@pytest.mark.slow
def test_full_matrix_compiles_for_ampere_and_hopper():
    """Both models, fp32/bf16/fp16, NCHW and channels_last, training and inference, SE and plain."""
    check(["se_resnet50", "se_resnext50_32x4d"], list(DTYPES), [False, True], [80, 90])


if __name__ == "__main__":  # the compiling child of compile_plans
    print(json.dumps(_compile_jobs(json.loads(sys.stdin.read()))))
