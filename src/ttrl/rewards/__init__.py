from .base import REWARDS, Group, Reward, RewardContext, RewardError, RewardOutput, all_rewards, register_reward

__all__ = ["REWARDS", "Group", "Reward", "RewardContext", "RewardError", "RewardOutput", "all_rewards", "register_reward"]
