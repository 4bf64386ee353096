"""One real GRPOTrainer step with ttrl majority and frequency rewards, run by tests/test_integrations_trl.py under
`accelerate launch --multi_gpu --num_processes 2` on a machine without GPUs (torchrun, gloo, CPU; accelerate's
`--cpu` flag with 2 processes starts a single process unless given an MPI host file). Each process writes what its reward function received and
returned, and every group the ttrl reward itself scored, to OUT_DIR/rank{N}.json.

The data set is [P1, P1, P2] unshuffled with 4 generations per prompt and 6 completions per process, so
the global batch is P1 x 4 | P1 x 4 | P2 x 4 and process 0 holds P1 x 4 + P1 x 2, process 1 P1 x 2 + P2 x 4:
one group is split across processes and one prompt appears as two groups in a row.
"""
import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from ttrl.integrations.trl import trl_reward
from ttrl.rewards import all_rewards, register_reward
from ttrl.zoo import resolve_model

LABEL = "4242"  # in the data set's answer column; must never reach the reward
PROMPTS = [[{"role": "user", "content": q}] for q in ("What is 13 + 29?", "What is 13 + 29?", "What is 7 - 4?")]

out_dir = Path(sys.argv[1])
scored_groups: dict[str, list[list[str]]] = {}  # per ttrl reward, every group it scored
calls: dict[str, list[dict]] = {}  # per TRL reward function, what it received and returned


def recorded(name: str):
    """ttrl reward `name`, registered again as recorded_NAME: records each group and checks it holds no label."""
    spec = all_rewards()[name]
    scored_groups[name] = []

    @register_reward(f"recorded_{name}", help=f"{name}, recording each group it scores (test only)", params=spec.params)
    def fn(group, params, ctx):
        for text in (group.query.prompt, *group.responses, *(a or "" for a in group.answers)):
            assert LABEL not in text, "the label reached the reward"
        scored_groups[name].append(list(group.responses))
        return spec.fn(group, params, ctx)

    inner = trl_reward(f"recorded_{name}", "number")
    calls[name] = []

    def reward_func(prompts, completions, **columns):
        rewards = inner(prompts, completions, **columns)
        calls[name].append({"prompts": prompts, "completions": completions, "rewards": rewards,
                            "answer_column": columns.get("answer")})
        return rewards

    reward_func.__name__ = f"ttrl_{name}"
    return reward_func


path = resolve_model("smollm2-135m")
tok = AutoTokenizer.from_pretrained(path)
tok.padding_side = "left"
args = GRPOConfig(output_dir=str(out_dir / "trainer"), per_device_train_batch_size=6, num_generations=4,
                  max_completion_length=8, max_steps=1, report_to="none", use_cpu=True, save_strategy="no",
                  logging_steps=1, temperature=1.0, shuffle_dataset=False, seed=0)
trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=[recorded("majority"), recorded("frequency")], args=args,
                      train_dataset=Dataset.from_dict({"prompt": PROMPTS, "answer": [LABEL] * len(PROMPTS)}),
                      processing_class=tok,
                      peft_config=LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
trainer.train()
rank = trainer.accelerator.process_index
(out_dir / f"rank{rank}.json").write_text(json.dumps({
    "rank": rank, "num_processes": trainer.accelerator.num_processes, "backend": torch.distributed.get_backend(),
    "device": str(trainer.accelerator.device), "calls": calls, "scored_groups": scored_groups,
    "logged": [h for h in trainer.state.log_history if any(k.startswith("rewards/") for k in h)],
}, indent=1))
