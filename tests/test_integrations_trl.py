"""ttrl rewards as TRL GRPOTrainer reward functions."""
import pytest

from ttrl.integrations.trl import trl_reward


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
