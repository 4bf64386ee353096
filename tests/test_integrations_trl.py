"""ttrl rewards as TRL GRPOTrainer reward functions, in one process and across processes."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import ttrl
from ttrl.integrations.trl import trl_reward
from ttrl.rewards import all_rewards, register_reward


def test_groups_consecutive_completions_per_prompt_and_ignores_columns():
    f = trl_reward("majority", "number")
    prompts = ["p1"] * 4 + ["p2"] * 3
    completions = ["= 5", "answer 5", "7", "5", "1", "2", "2"]
    # hand-computed: p1 votes 5,5,7,5 -> majority 5; p2 votes 1,2,2 -> majority 2
    expect = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    assert f(prompts, completions) == expect
    # a label column from the data set changes nothing: it never reaches the reward
    assert f(prompts, completions, answer=["7"] * 7, solution=["1"] * 7) == expect


def test_frequency_and_chat_message_inputs():
    f = trl_reward("frequency", "number")
    prompts = [[{"role": "user", "content": "q"}]] * 4
    completions = [[{"role": "assistant", "content": t}] for t in ("3", "3", "4", "no number")]
    assert f(prompts, completions) == [0.5, 0.5, 0.25, 0.0]


def test_rewards_needing_the_policy_or_token_stats_are_refused():
    with pytest.raises(ValueError, match="token_stats"):
        trl_reward("self_certainty", "number")


def test_the_same_prompt_twice_in_a_row_is_two_groups_when_the_group_size_is_known():
    # one prompt drawn twice: 8 equal prompts in a row are two groups of 4, not one group of 8
    prompts, completions = ["p"] * 8, ["5", "5", "5", "7", "7", "7", "7", "5"]
    # hand-computed: groups (5,5,5,7) and (7,7,7,5) -> majorities 5 and 7
    assert trl_reward("majority", num_generations=4)(prompts, completions) == [1, 1, 1, 0, 1, 1, 1, 0]
    # as one group of 8 the vote ties 4-4 and the first-seen answer 5 wins: a different reward
    assert trl_reward("majority")(prompts, completions) == [1, 1, 1, 0, 0, 0, 0, 1]


def test_a_group_of_num_generations_mixing_prompts_is_refused():
    f = trl_reward("majority", num_generations=4)
    with pytest.raises(ValueError, match="different prompts"):
        f(["a"] * 3 + ["b"] * 5, ["1"] * 8)
    with pytest.raises(ValueError, match="not a multiple"):
        f(["a"] * 6, ["1"] * 6)


def test_a_call_from_trl_whose_group_size_cannot_be_found_is_refused():
    # TRL passes trainer_state; without the trainer's log_metric (or num_generations=) the size is unknown
    with pytest.raises(ValueError, match="num_generations"):
        trl_reward("majority")(["a"] * 4, ["1"] * 4, trainer_state=object())
    assert trl_reward("majority", num_generations=4)(["a"] * 4, ["1"] * 4, trainer_state=object()) == [1.0] * 4


LABEL = "label-7391"
_seen: list = []


@register_reward("test_sees_no_label", help="test only: fails if a label reaches it, records what it saw")
def _sees_no_label(group, params, ctx):

    for text in (group.query.prompt, group.query.id, *group.responses, *(a or "" for a in group.answers)):
        assert LABEL not in text and "7391" not in text, "a label reached the reward"
    _seen.append(group)
    return all_rewards()["majority"].fn(group, all_rewards()["majority"].params(), ctx)


def test_dataset_columns_never_reach_a_ttrl_reward():
    f = trl_reward("test_sees_no_label", "number", num_generations=3)
    prompts, completions = ["q1"] * 3 + ["q2"] * 3, ["4", "4", "5", "8", "9", "9"]
    _seen.clear()
    with_label = f(prompts, completions, answer=[LABEL] * 6, solution=["7391"] * 6, trainer_state=object())
    changed = f(prompts, completions, answer=["4"] * 6, solution=["5"] * 6, trainer_state=object())
    assert with_label == changed == f(prompts, completions) == [1, 1, 0, 0, 1, 1]
    # what a reward sees is the prompt, the responses and their answers: nothing else of the data set
    assert [g.query.prompt for g in _seen[:2]] == ["q1", "q2"] and _seen[0].responses == ("4", "4", "5")


# -- several processes -------------------------------------------------------------------------------------

# a global batch of 3 prompts x 4 completions cut into 2 processes x 6: group "b" is split 2 + 2
GLOBAL_PROMPTS = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
GLOBAL_COMPLETIONS = ["5", "5", "7", "x", "1", "2", "2", "3", "9", "9", "9", "9"]


def _gloo_worker(rank: int, store: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    mine = slice(6 * rank, 6 * rank + 6)
    rewards = trl_reward("frequency", "number", num_generations=4)(GLOBAL_PROMPTS[mine], GLOBAL_COMPLETIONS[mine])
    Path(out, f"rank{rank}.json").write_text(json.dumps(rewards))
    dist.destroy_process_group()


def test_two_gloo_processes_score_a_split_group_whole(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_gloo_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    whole = trl_reward("frequency", "number", num_generations=4)(GLOBAL_PROMPTS, GLOBAL_COMPLETIONS)
    assert got[0] + got[1] == whole
    # group b whole: answers 1,2,2,3 -> frequencies 1/4, 2/4, 2/4, 1/4 (a fragment 1,2 would give 1/2, 1/2)
    assert whole[4:8] == [0.25, 0.5, 0.5, 0.25]
    fragment = trl_reward("frequency", "number")(GLOBAL_PROMPTS[:6], GLOBAL_COMPLETIONS[:6])
    assert fragment[4:6] == [0.5, 0.5] != got[0][4:6]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _text(x) -> str:
    return x if isinstance(x, str) else x[-1]["content"]


@pytest.mark.slow
def test_grpo_trainer_on_two_processes_scores_every_group_whole(tmp_path):
    """A real GRPOTrainer step on 2 CPU processes (torchrun + gloo) with ttrl majority and frequency rewards:
    every group each reward scored is a whole group of 4, and every process's rewards equal scoring all
    completions in one process. Set TTRL_SCALE_OUT_REPORT=path to keep a readable report."""
    src = str(Path(ttrl.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(Path(__file__).with_name("trl_grpo_multiprocess.py")), str(tmp_path)]
    run = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["num_processes"], r["backend"], r["device"]) for r in ranks] == [(2, "gloo", "cpu:0")] * 2

    lines = [f"$ {' '.join(cmd[1:])}",
             ("2 processes, torchrun + gloo on CPU; GRPOConfig(per_device_train_batch_size=6, num_generations=4, "
              "shuffle_dataset=False), data set [P1, P1, P2] -> global batch P1x4 | P1x4 | P2x4"), ""]
    for name in ("majority", "frequency"):
        call = [r["calls"][name] for r in ranks]
        assert [len(c) for c in call] == [1, 1]  # one generation batch, one reward call per process
        prompts = [p for c in call for p in c[0]["prompts"]]
        completions = [_text(t) for c in call for t in c[0]["completions"]]
        assert len(completions) == 12 and all(c[0]["answer_column"] == ["4242"] * 6 for c in call)
        groups = [completions[s:s + 4] for s in range(0, 12, 4)]
        # every group scored, in every process, was a whole group of 4 in global order
        assert all(r["scored_groups"][name] == groups for r in ranks)
        alone = trl_reward(name, "number", num_generations=4)(prompts, completions)
        returned = [x for c in call for x in c[0]["rewards"]]
        assert returned == alone
        fragments = [x for c in call for x in trl_reward(name, "number")(c[0]["prompts"], [_text(t) for t in c[0]["completions"]])]
        logged = [h[f"rewards/ttrl_{name}/mean"] for r in ranks for h in r["logged"]]
        assert logged and all(abs(v - sum(alone) / 12) < 1e-6 for v in logged)
        lines += [f"reward {name}:"]
        for r, c in enumerate(call):
            for i, (p, t, x) in enumerate(zip(c[0]["prompts"], c[0]["completions"], c[0]["rewards"])):
                lines.append(f"  process {r} item {i} (global {6 * r + i}, group {(6 * r + i) // 4}) "
                             f"prompt={_text(p)!r} completion={_text(t)!r} reward={x}")
        sizes = [[len(g) for g in r["scored_groups"][name]] for r in ranks]
        lines += [(f"  group sizes scored by process 0: {sizes[0]}, by process 1: {sizes[1]}; each equal to the global "
                  "groups in global order: True"),
                  f"  rewards returned (process 0 | process 1): {returned[:6]} | {returned[6:]}",
                  f"  single-process scoring of all 12:          {alone[:6]} | {alone[6:]}",
                  (f"  equal: {returned == alone}; TRL's logged rewards/ttrl_{name}/mean {logged[0]:.4f}, single-process "
                  f"mean {sum(alone) / 12:.4f}"),
                  (f"  (scoring each process's fragment alone, as a group-unaware reward would: {fragments}; "
                  f"differs: {fragments != alone})"), ""]
    report = os.environ.get("TTRL_SCALE_OUT_REPORT")
    if report:
        Path(report).write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_trl_grpo_trainer_runs_a_step_with_a_ttrl_reward(tmp_path):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from ttrl.zoo import resolve_model

    path = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=6, max_steps=1, report_to="none", use_cpu=True, save_strategy="no",
                      logging_steps=1, temperature=1.0)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=trl_reward("majority"),
                          args=args, train_dataset=Dataset.from_dict({"prompt": ["What is 2 + 3? Answer:"] * 2,
                                                                     "answer": ["5", "5"]}),
                          processing_class=tok, peft_config=LoraConfig(r=4, target_modules="all-linear",
                                                                       task_type="CAUSAL_LM"))
    trainer.train()
    logged = [h for h in trainer.state.log_history if "rewards/ttrl_majority/mean" in h]
    assert logged and 0.0 <= logged[0]["rewards/ttrl_majority/mean"] <= 1.0


def test_the_scale_out_page_configs_are_valid_for_accelerate_and_trl(tmp_path):
    """docs/scale_out.md's accelerate configs load with accelerate's own loader (which rejects unknown keys), and
    its train_trl.py passes only GRPOConfig fields and builds its ttrl reward."""
    import ast
    import dataclasses

    from accelerate.commands.config.config_args import ClusterConfig
    from doc_blocks import named_blocks
    from trl import GRPOConfig

    blocks = named_blocks("scale_out.md")
    for name in ("accelerate_ddp.yaml", "accelerate_zero3.yaml"):
        (tmp_path / name).write_text(blocks[name])
        cfg = ClusterConfig.from_yaml_file(tmp_path / name)
        assert cfg.num_processes == 8 and cfg.mixed_precision == "bf16"
    assert ClusterConfig.from_yaml_file(tmp_path / "accelerate_zero3.yaml").deepspeed_config["zero_stage"] == 3
    tree = ast.parse(blocks["train_trl.py"])
    calls = {n.func.id: n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    used = {k.arg for k in calls["GRPOConfig"].keywords}
    assert used <= fields, used - fields
    kw = {k.arg: ast.literal_eval(k.value) for k in calls["GRPOConfig"].keywords}
    # 8 GPUs x per-device batch x steps per generation = whole groups of num_generations, 15 prompts
    assert 8 * kw["per_device_train_batch_size"] * kw["steps_per_generation"] == 15 * kw["num_generations"]
    reward = calls["trl_reward"]
    f = trl_reward(*[ast.literal_eval(a) for a in reward.args])
    assert f.__name__ == "ttrl_majority"
