"""Regenerate docs/earlier-results.md's table from the JSON files in benchmarks/results/.

python benchmarks/make_table.py
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def rows() -> list[str]:
    out = []
    pendulum = _load("pendulum.json")
    if pendulum:
        steps = sorted(
            s["steps_to_threshold"] for s in pendulum["seeds"] if s["steps_to_threshold"]
        )
        config = pendulum["config"]
        value = config.get("value", {})
        value = f"{value.get('kind', 'critic')} terminal value" if value.get("enabled") else "none"
        out.append(
            f"| InvertedPendulum-v5, gradient MPC (H = {config['horizon']}, "
            f"{config['search']['iterations']} Adam steps, terminal value: {value}), "
            f"{len(pendulum['seeds'])} seeds, ≤ {config['total_steps']:,} "
            f"env steps: seeds reaching return 1000 "
            f"| {pendulum['reached']} (at {', '.join(f'{x:,}' for x in steps)} steps); final "
            f"return {pendulum['final_return_mean']:.0f} ± {pendulum['final_return_std']:.0f} "
            "| SB3 PPO defaults: median 25,000 (10/10 seeds, experiment `pendulum` below); "
            f"paper: ~30× fewer than PPO | {pendulum['machine']} |"
        )
    hopper = _load("hopper.json")
    if hopper:
        steps = max(s["env_steps"][-1] for s in hopper["seeds"])
        out.append(
            f"| Hopper-v5, gradient MPC ({hopper['config']['model']}, H = "
            f"{hopper['config']['horizon']}), {len(hopper['seeds'])} seeds, {steps:,} env steps "
            f"| final return {hopper['final_return_mean']:.0f} ± {hopper['final_return_std']:.0f} "
            f"| paper: MBRL plateaus at 200–300 | {hopper['machine']} |"
        )
    planners = _load("planner_comparison.json")
    if planners:
        cells = ", ".join(
            f"{r['planner']} {r['return_mean']:.0f} ({r['ms_per_step']:.0f} ms)"
            for r in planners["results"]
        )
        out.append(
            f"| {planners['env']} planners on one trained model, matched compute, "
            f"{planners['episodes']} episodes: return (ms/step) | {cells} "
            f"| paper: gradient ≫ CEM ≫ random shooting | {planners['machine']} |"
        )
    model_error = _load("model_error_hopper/benchmark.json")
    if model_error:
        pooled = model_error["pooled_mean_abs_error"]["torso angle"]
        out.append(
            f"| Hopper-v5 model error, {model_error['train_transitions']:,} random transitions, "
            f"{model_error['model']}: torso-angle mean abs. error "
            f"| 1 step {pooled['1']:.4f}, 20 steps {pooled['20']:.4f} "
            f"| paper: accurate one-step, poor far from the start | 2-core CPU |"
        )
    return (
        out
        + ablation_rows()
        + model_capacity_rows()
        + prior_foresight_rows()
        + speed_rows()
        + experiment_rows()
    )


def ablation_rows() -> list[str]:
    """A row per ``ablation_*.json`` (benchmarks/ablation.py): one checkpoint, planning changed
    or learned parts swapped in from an earlier snapshot."""
    out = []
    for path in sorted(RESULTS.glob("ablation_*.json")):
        result = json.loads(path.read_text())
        cells = "; ".join(
            f"{r['setting']} {r['return_mean']:.0f} ± {r['return_std']:.0f} "
            f"({r['episode_length_mean']:.0f} steps)"
            for r in result["results"]
        )
        note = f"; {result['note']}" if result.get("note") else ""
        name = path.stem.removeprefix("ablation_")
        out.append(
            f"| {result['env']} ablation `{name}`: one checkpoint at "
            f"{result['env_steps']:,} env steps, {result.get('changed', 'planning changed')}, "
            f"{result['episodes']} episodes "
            f"each | {cells} | issue #7: what limits MPC (model, planner or value) "
            f"| {result['machine']}{note} |"
        )
    return out


def model_capacity_rows() -> list[str]:
    """A row per ``model_capacity/*/model_capacity.json`` (benchmarks/model_capacity.py)."""
    out = []
    for path in sorted(RESULTS.glob("model_capacity/*/model_capacity.json")):
        result = json.loads(path.read_text())
        short, long = (str(h) for h in (result["horizons"][0], result["horizons"][-1]))
        cells = "; ".join(
            f"{label} {r['errors']['all dims'][short]:.3f} / {r['errors']['all dims'][long]:.3f}"
            for label, r in result["results"].items()
        )
        about = path.parent / "about.json"
        note = json.loads(about.read_text())["finding"] if about.exists() else ""
        out.append(
            f"| {result['env']} model capacity `{path.parent.name}`: fresh models refit on "
            f"the run's {result['run_transitions']:,} transitions "
            f"({result['updates_per_refit']:,} updates each), mean abs. error over all dims, "
            f"{short}-step / {long}-step open loop, on {len(result['test_episodes'])} fresh "
            f"MPC episodes | {cells} | issue #7: is the model error a matter of capacity "
            f"| {result['machine']}; {note} |"
        )
    return out


def prior_foresight_rows() -> list[str]:
    """A row per ``prior_foresight/*.json`` (benchmarks/prior_foresight.py)."""
    out = []
    for path in sorted(RESULTS.glob("prior_foresight/*.json")):
        result = json.loads(path.read_text())
        episodes = result["episodes"]
        lookahead = result["lookahead"]
        real = ", ".join(f"{e['length']}{'' if e['fell'] else ' (time limit)'}" for e in episodes)
        forecast = ", ".join(
            str(e["forecast_length_from_reset"])
            if e["forecast_length_from_reset"] <= lookahead
            else "none"
            for e in episodes
        )
        shares = (
            "; ".join(
                f"{bucket} steps before: {s['fall_predicted_share']:.2f} of {s['states']} states"
                for bucket, s in result["forecast_share_by_steps_to_fall"].items()
                if s["states"]
            )
            or "no real falls to forecast"
        )
        note = f"; {result['note']}" if result.get("note") else ""
        out.append(
            f"| {result['env']} prior foresight `{path.stem}`: the prior alone at "
            f"{result['env_steps']:,} env steps, {len(episodes)} fresh episodes; does the model "
            f"forecast its falls (closed loop, ≤ {lookahead} steps) | real episode lengths "
            f"{real}; model's forecast fall from the reset state {forecast}; fall forecast "
            f"from real states {shares} | issue #7: can the start-state check see a fall "
            f"| {result['machine']}{note} |"
        )
    return out


def _load_note(result: dict) -> str:
    """How busy the machine was: a 1-minute load average at the start, where recorded."""
    load = result.get("load_average_before")
    return "shared with other runs" if load is None else f"1-min load average {load:g} at start"


def _last_plan_ms(result: dict) -> float:
    """Planning ms per env step in a run's last iteration (rows before it record the mean)."""
    return result.get("last_plan_ms_per_step", result["plan_ms_per_step"])


def speed_rows() -> list[str]:
    out = []
    planning = _load("planning_speed.json")
    if planning:
        cells = "; ".join(
            f"{r['case']}: {r['eager_ms']:,.0f} ms eager"
            + (f", {r['compiled_ms']:,.0f} compiled ({r['speedup']}×)" if "speedup" in r else "")
            for r in planning["results"]
        )
        out.append(
            f"| planning ms per MPC step, {planning['device']} | {cells} | issue #6 on an idle "
            f"2-core CPU: grad 40 cand. ~110 ms, grad 400 ~840–980 ms, CEM PETS size ~2.8 s "
            f"| {planning['machine']}, {planning['threads']} thread, shared with other runs |"
        )
    out += cuda_planning_rows()
    loop = _load("loop_speed.json")
    if loop:
        cells = "; ".join(
            f"{r['preset']}{' (compiled rollout)' if r['compiled'] else ''}: "
            f"{r['steady_env_steps_per_s']:.1f} env steps/s (target "
            f"{r['target_env_steps_per_s']:g}; plan {_last_plan_ms(r):.0f} ms/step; "
            f"{_load_note(r)})"
            for r in loop["results"]
        )
        out.append(
            f"| whole loop in a long run, env steps per second | {cells} "
            f"| issue #6 targets | {loop['machine']} |"
        )
    gpu_loop = _load("loop_speed_cuda.json")
    if gpu_loop:
        cells = "; ".join(
            f"{r['preset']}: {r['steady_env_steps_per_s']:.0f} env steps/s "
            f"(plan {r['plan_ms_per_step']:.1f} ms/step, whole-plan CUDA graph, "
            f"{'compiled' if r['compiled'] else 'not compiled'})"
            for r in gpu_loop["results"]
        )
        out.append(
            f"| whole loop in a long run on a GPU, env steps per second | {cells} "
            f"| issue #6: a 100k-step Hopper run within 1.5 h (20 env steps/s) "
            f"| {gpu_loop['device']}, {gpu_loop['machine']} |"
        )
    peer = _load("mbrl_lib_speed.json")
    if peer:
        cells = "; ".join(
            f"{r['setting']}: mbrl-lib {r['mbrl_lib_ms']:,.0f} ms, dynaplan "
            f"{r['dynaplan_ms']:,.0f} ms ({r['mbrl_lib_ms'] / r['dynaplan_ms']:.2f}×)"
            for r in peer["results"]
        )
        out.append(
            f"| PETS-size CEM planning vs mbrl-lib 0.2.0, ms per step | {cells} | issue #6: "
            f"mbrl-lib 2.2 s / 4.2 s on an idle CPU | 2-core CPU, shared (upper bounds) |"
        )
    return out


def cuda_planning_rows() -> list[str]:
    """ms per plan on each GPU measured: eager, the plain whole-plan CUDA graph and the fastest
    dynaplan mode (the autotuned compile experiment apart)."""
    rows = []
    for path in sorted(RESULTS.glob("planning_speed_cuda*.json")):
        planning = _load(path.name)
        cells = []
        for r in planning["results"]:
            timings = {k.removesuffix("_ms"): v for k, v in r.items() if k.endswith("_ms")}
            ours = {m: t for m, t in timings.items() if m != "eager" and "autotuned" not in m}
            best = min(ours, key=ours.get)
            cell = f"{r['case']}: {timings['eager']:.0f} ms eager, {timings['graph']:.1f} graph"
            if best != "graph":
                error = r.get(f"{best.rsplit('-', 1)[1]}_return_rel_err")
                note = f", returns within {100 * error:.2g}%" if error is not None else ""
                cell += f", {timings[best]:.1f} {best}{note}"
            cell += f" ({r['speedup']:.1f}×)"  # eager / best, as planning_speed.py writes it
            for mode in (m for m in timings if "autotuned" in m):
                cell += f"; {timings[mode]:.1f} {mode} (experiment)"
            cells.append(cell)
        rows.append(
            f"| planning ms per MPC step, {planning['device']} | {'; '.join(cells)} | issue #6 on "
            f"an H100: CEM PETS size 53–64 ms eager, 33 ms as one CUDA graph, target ≤ 20; grad "
            f"400 176–193 ms eager, 24 ms as one CUDA graph, target ≤ 12 "
            f"| {planning['machine']}, torch {planning['torch']} |"
        )
    return rows


EXPERIMENT_REFERENCES = {
    "pendulum": "paper: MBRL needs ~30× fewer env steps than PPO to reach 1000",
    "pendulum-lqr": (
        "experiment pendulum: PPO median 25,000 steps (10/10 seeds), the paper's MPC (H = 10) "
        "3/10 within 3,000; paper: MBRL ~30× fewer env steps than PPO"
    ),
    "pendulum-lqr-replan2": (
        "experiment pendulum: PPO median 25,000 steps (10/10 seeds); paper: ~30× fewer than PPO"
    ),
    "hopper": "paper: MBRL 200–300, Nagabandi 100, PPO > 1000 at 500k, random 16, zero 150",
    "hopper-models": "paper: MBRL 200–300 (single network); experiment hopper: mlp H10 420 ± 64",
    "ant": "paper: MBRL near the zero-action policy; MBBL PETS-CEM 1,166 at 200k",
    "warmstart": "paper: expert 200–300, clone ~180; warm-started PPO ahead of vanilla early",
    "value-hopper": "issue #7 target: 3,000 at 100k env steps; paper: 200–300",
    "penalty-hopper": "issue #7: penalise ensemble disagreement, configurable and measured",
    "hopper-long": (
        "issue #7 target: 3,000 at 100k (3 seeds); MBPO ≈ 3,000 at 70–100k; SB3 SAC ≈ 3,000 "
        "only after 1M; paper 200–300"
    ),
    "beyond-hopper-first-look": (
        "issue #7 target: 3,000 at 100k; MBPO ≈ 3,000 at 70–100k; paper 200–300"
    ),
    "prior-horizon": (
        "issue #7 target: 3,000 at 100k (3 seeds); experiment hopper-long: 3,205 ± 218 at 100k, "
        "fresh evaluations 2,495; paper 200–300"
    ),
    "hopper-value-prior": (
        "issue #7 target: 3,000 at 100k (3 seeds); MBPO ≈ 3,000 at 70–100k; SB3 SAC ≈ 3,000 "
        "only after 1M; paper 200–300"
    ),
    "hopper-discount": (
        "issue #7 target: 3,000 at 100k (3 seeds); the same seeds with gamma 0.99: 1,911, "
        "2,384, 3,048, 2,684 (2,507 ± 417); MBPO ≈ 3,000 at 70–100k; paper 200–300"
    ),
    "ant-value-prior": (
        "issue #7 target: 3,000 at 200k; MBBL PETS-CEM 1,166 at 200k; paper: MBRL near the "
        "zero-action policy (997)"
    ),
    "ant-discount": (
        "issue #7 target: 3,000 at 200k; zero-action policy 997; ant-value-prior (gamma 0.99) "
        "1,081 on average over 67k–100k"
    ),
}


def experiment_rows() -> list[str]:
    """One row per ``benchmarks/results/experiments/NAME`` (from ``collect_experiment.py``)."""
    out = []
    for summary in sorted((RESULTS / "experiments").glob("*/summary.csv")):
        name = summary.parent.name
        about = json.loads((summary.parent / "about.json").read_text())
        with open(summary, newline="") as f:
            groups = list(csv.DictReader(f))
        cells = []
        budgets = sorted(
            {int(k.split("_")[2]) for k in groups[0] if k.endswith("_mean") and "at_" in k}
        )
        for g in groups:
            # a group whose runs stopped short of the last budget: its last budget with a return
            known = [b for b in budgets if g[f"return_at_{b}_mean"] not in ("", "nan")]
            budget = known[-1] if known else budgets[-1]
            mean, std = (float(g[f"return_at_{budget}_{key}"]) for key in ("mean", "std"))
            cell = f"{g['group']} ({g['seeds']} seeds): {mean:.0f} ± {std:.0f}"
            if budget != budgets[-1]:
                cell += f" at {budget:,}"
            if g.get("threshold"):
                median = g["steps_to_threshold_median"]
                steps = f"{float(median):,.0f}" if median not in ("", "nan") else "–"
                cell += f", {g['reached']}/{g['seeds']} reach {float(g['threshold']):.0f} "
                cell += f"(median {steps} steps)"
            cells.append(cell)
        clones = [json.loads(p.read_text()) for p in sorted(summary.parent.glob("clone_*.json"))]
        for clone in clones:
            method = clone["config"]["method"]
            expert = clone["expert"].get("return_mean", clone["expert"]["last_run_eval"])
            cells.append(f"{method} clone {clone['clone']['return_mean']:.0f} vs MPC {expert:.0f}")
        out.append(
            f"| experiment `{name}`: final evaluation return (the last one at or before "
            f"{budgets[-1]:,} env steps) | {'; '.join(cells)} "
            f"| {EXPERIMENT_REFERENCES.get(name, '')} | {about['machine']}; {about['note']} |"
        )
    return out


def main() -> None:
    readme = ROOT / "docs" / "earlier-results.md"
    text = readme.read_text()
    head, rest = text.split(START)
    _, tail = rest.split(END)
    table = [
        "| benchmark | dynaplan | reference | machine |",
        "|---|---|---|---|",
        *rows(),
    ]
    readme.write_text(head + START + "\n" + "\n".join(table) + "\n" + END + tail)
    print("\n".join(table))


if __name__ == "__main__":
    main()
