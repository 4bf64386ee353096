"""One test-time RL step, top to bottom: sample -> extract answers -> reward -> advantages -> update -> log.

The trainer is typed on `Query`: it never receives a label. Label-based metrics (label accuracy,
reward accuracy) are computed by the protocol from the returned `StepResult`.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .backends.base import Backend
from .balance import balanced, features
from .choice_orders import option_orders, reorder, to_original
from .config import GRPOConfig, SafeguardConfig, SamplingConfig
from .data import Query
from .extractors import Extractor
from .group import Group, VoteStats
from .grpo import aggregate, batch_advantages, group_advantages, grpo_token_loss, tis_weights
from .rewards import Reward, RewardContext
from .rewards.prior import answer_set_key
from .rollout import Completion
from .safeguards import gate_reason
from .seeds import derive
from .stats import StepStats, TrainerState, UpdateStats

View = tuple[Query, "tuple[int, ...] | None"]  # a query as shown to the model, and its options' order
VOTE_FIELDS = [f.name for f in dataclasses.fields(VoteStats)]


@dataclass
class GroupResult:
    group: Group  # responses, answers, classes and the vote; no label
    rewards: list[float]
    trained: bool
    gated: str | None = None  # why the gate kept this group out of the update
    written: str | None = None  # the letter most samples wrote, in the order they were shown (option-order voting)

    @property
    def query_id(self) -> str:
        return self.group.query.id

    @property
    def pseudo_label(self) -> str | None:  # the majority answer, for label-accuracy metrics
        return self.group.majority_answer

    @property
    def rewarded_answer(self) -> str | None:
        """The parsed answer with the highest reward (first on ties): what the update pushes towards. For a vote
        it is the majority answer; for an embedding reward the medoid, where the majority of sentences that all
        differ would be an arbitrary sample."""
        parsed = [i for i, a in enumerate(self.group.answers) if a is not None]
        return self.group.answers[max(parsed, key=lambda i: (self.rewards[i], -i))] if parsed else None


@dataclass
class StepResult:
    stats: StepStats
    groups: list[GroupResult] = field(default_factory=list)


class Trainer:
    def __init__(self, policy: Backend, extractor: Extractor, reward: Reward, sampling: SamplingConfig,
                 grpo: GRPOConfig, instruction: str, seed: int, safeguards: SafeguardConfig | None = None):
        self.policy, self.extractor, self.reward = policy, extractor, reward
        self.sampling, self.grpo, self.instruction = sampling, grpo, instruction
        self.seed = seed
        self.gate = safeguards
        # token statistics cost a log-softmax per sampled token: only when a reward or the monitor reads them
        self.want_token_stats = "token_stats" in reward.needs or bool(safeguards and safeguards.monitor != "off")
        self.rng = np.random.default_rng(derive(seed, "trainer"))
        self.ctx = RewardContext(rng=self.rng, policy=policy)  # lives for the run (reward state)
        self.optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=grpo.lr, weight_decay=grpo.weight_decay)
        self.steps = 0

    def step(self, queries: Sequence[Query]) -> StepResult:
        t0 = time.perf_counter()
        s, g = self.sampling, self.grpo

        # 1. sample N votes per query (multiple-choice items: n_votes / k in each of k option orders)
        rollouts, views = self._rollout(queries)
        t_sample = time.perf_counter()

        # 2. extract answers and their equivalence classes; 3. reward the whole group
        results, diag_rows, votes, pending = [], [], [], []
        for q, vs, comps in zip(queries, views, rollouts):
            # the answer as written in the view a sample saw, and as the option it names in the original order
            written = [self.extractor.extract(c.text, v.choices) for c, (v, _) in zip(comps, vs)]
            answers = [w if order is None else to_original(w, order) for w, (_, order) in zip(written, vs)]
            group = Group.build(q, [c.text for c in comps], self.extractor,
                                [c.stats for c in comps] if comps[0].stats is not None else None, answers)
            out = self.reward(group, self.ctx)
            diag_rows.append(out.diagnostics)
            vote = group.vote_stats()
            votes.append(vote)
            gated = gate_reason(vote, self.gate) if self.gate is not None else None

            # 4. the trained subset (TTRL votes on 64, trains on 32), advantages below
            idx = np.arange(len(comps))
            if s.n_train < s.n_votes:
                idx = np.sort(self.rng.choice(len(comps), size=s.n_train, replace=False))
            trained = _neutral_unparsed(out.rewards, group.classes) if g.unparsed == "neutral" else out.rewards
            if not gated:
                pending.append((len(results), q, comps, written, idx, torch.tensor([trained[i] for i in idx])))
            top = Counter(w for w in written if w is not None).most_common(1)
            results.append(GroupResult(group, out.rewards, False, gated,
                                       top[0][0] if top and vs[0][1] is not None else None))
        args = (g.adv_eps, g.scale_advantages, g.adv_std == "unbiased")
        advs = (batch_advantages([p[-1] for p in pending], *args) if g.adv_baseline == "batch"
                else [group_advantages(p[-1], *args) for p in pending])
        train_items, train_feats = [], []
        for (k, q, comps, written, idx, _), adv in zip(pending, advs):
            if adv is not None:
                results[k].trained = True
                train_items += [(comps[i], float(a)) for i, a in zip(idx, adv)]
                train_feats += [features(answer_set_key(q), written[i], g.balance_unit) for i in idx]
        if g.balance_answers:
            train_items = list(zip([c for c, _ in train_items], balanced([a for _, a in train_items], train_feats)))
        t_reward = time.perf_counter()

        # 5. update
        upd = self._update(train_items) if train_items else UpdateStats()
        self.steps += 1
        t_end = time.perf_counter()

        # 6. log (label-free statistics only)
        all_comps = [c for comps in rollouts for c in comps]
        certainty = _certainty(all_comps)
        stats = StepStats(
            step=self.steps,
            reward_mean=float(np.mean([r for res in results for r in res.rewards])),
            update=upd,
            **{k: float(np.mean([getattr(v, k) for v in votes])) for k in VOTE_FIELDS},
            response_length=float(np.mean([len(c.ids) for c in all_comps])),
            finished=float(np.mean([c.finished for c in all_comps])),
            groups_trained=sum(r.trained for r in results),
            groups_gated=sum(r.gated is not None for r in results),
            groups=len(results),
            tokens=sum(len(c.ids) for c in all_comps),
            seconds=t_end - t0,
            seconds_sample=t_sample - t0,
            seconds_reward=t_reward - t_sample,
            seconds_update=t_end - t_reward,
            self_certainty=certainty.get("self_certainty"),
            token_entropy=certainty.get("token_entropy"),
            reward_diagnostics=_mean_dicts(diag_rows),
        )
        return StepResult(stats, results)

    def _rollout(self, queries: Sequence[Query]) -> tuple[list[list[Completion]], list[list[View]]]:
        """N completions per query and the view of the query each was sampled from (its options' order, see
        choice_orders.py). A completion's `text` is what the extractor and the reward read, its `ids` what the update
        scores (image_trainer.py overrides this and `_logprobs` for image tokens)."""
        s, k = self.sampling, self.sampling.choice_orders
        order_rng = np.random.default_rng(derive(self.seed, "choice_orders", self.steps))
        shown = [self._shown(q, k, order_rng) for q in queries]
        prompts = [self.policy.render(vq, self.instruction) for views in shown for vq, _ in views]
        parts = self.policy.generate(prompts, s.n_votes // k, temperature=s.temperature, top_p=s.top_p,
                                     max_new_tokens=s.max_new_tokens, batch_size=s.batch_size,
                                     seed=derive(self.seed, "rollout", self.steps), token_stats=self.want_token_stats)
        rollouts = [[c for part in parts[i * k:(i + 1) * k] for c in part] for i in range(len(queries))]
        views = [[v for v, part in zip(vs, parts[i * k:(i + 1) * k]) for _ in part] for i, vs in enumerate(shown)]
        return rollouts, views

    @staticmethod
    def _shown(query: Query, k: int, rng: np.random.Generator) -> list[View]:
        """The k views of a query the rollouts see: option orders for a multiple-choice item, else itself k times.
        The views come in a random sequence: the vote breaks ties towards the answer seen first, and if that were
        always the original order's, a pure letter prior ('A' in every view: a 2-2-2-2 tie) would be rewarded in
        the original order every time, which is the order evaluation uses (measured: 81% 'A' after adapting)."""
        if k == 1 or not query.choices:
            return [(query, None)] * k
        orders = option_orders(len(query.choices), k, rng)
        orders = [orders[i % len(orders)] for i in range(k)]
        return [(reorder(query, orders[i]), orders[i]) for i in rng.permutation(k)]

    def _logprobs(self, comps: list[Completion], reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(logp [B, T], mask [B, T]) of the completions' tokens under the policy (or the reference)."""
        return self.policy.token_logprobs(comps, temperature=self.sampling.temperature, reference=reference)

    # -- state: checkpoints, rollback, episodic reset ------------------------------------------
    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the trainable weights (the LoRA adapter: a few MB; no second model copy)."""
        return {n: p.detach().clone() for n, p in self.policy.model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def restore(self, weights: dict[str, torch.Tensor], reset_optimizer: bool = True) -> None:
        params = dict(self.policy.model.named_parameters())
        for n, w in weights.items():
            params[n].copy_(w)
        if reset_optimizer:
            self.optimizer.state.clear()

    def state_dict(self) -> TrainerState:
        return TrainerState(self.snapshot(), self.optimizer.state_dict(), self.steps, self.rng.bit_generator.state,
                            self.ctx.state_dict())

    def load_state_dict(self, state: TrainerState) -> None:
        self.restore(state.weights, reset_optimizer=False)
        self.optimizer.load_state_dict(state.optimizer)
        self.steps = state.steps
        self.rng.bit_generator.state = state.rng
        self.ctx.load_state_dict(state.reward_state)

    def _update(self, items: list[tuple[Completion, float]]) -> UpdateStats:
        g = self.grpo
        mb = g.micro_batch
        chunks = [items[i:i + mb] for i in range(0, len(items), mb)]
        total_tokens = float(sum(len(c.ids) for c, _ in items))
        refs = olds = None
        if g.kl_coef > 0:
            refs = [self._logprobs([c for c, _ in ch], reference=True)[0] for ch in chunks]
        if g.ppo_epochs > 1:  # off-policy passes need the sampling policy's log-probs, frozen
            with torch.no_grad():
                olds = [self._logprobs([c for c, _ in ch])[0].detach() for ch in chunks]
        sums = {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0, "grad_norm": 0.0}
        off_policy = any(c.sampler_logprobs is not None for c, _ in items)
        if off_policy:
            sums.update(rollout_kl=0.0, **({"tis_weight": 0.0} if g.tis_cap > 0 else {}))
        params = self.policy.trainable_parameters()
        for _ in range(g.ppo_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for k, ch in enumerate(chunks):
                logp, mask = self._logprobs([c for c, _ in ch])
                old = olds[k] if olds is not None else logp.detach()
                adv = torch.tensor([a for _, a in ch], dtype=logp.dtype, device=logp.device)
                ref = refs[k] if refs is not None else None
                weight = None
                if off_policy:
                    sampler = _padded([c.sampler_logprobs for c, _ in ch], old)
                    # KL(sampler || policy) estimated on the sampled tokens: how far the engine is from the policy
                    sums["rollout_kl"] += float(((sampler - old) * mask).sum()) / total_tokens / g.ppo_epochs
                    if g.tis_cap > 0:
                        weight = tis_weights(old, sampler, g.tis_cap)
                        sums["tis_weight"] += float((weight * mask).sum()) / total_tokens / g.ppo_epochs
                tok_loss, kl, ratio = grpo_token_loss(logp, old, adv, ref, clip_eps=g.clip_eps, kl_coef=g.kl_coef,
                                                      is_weight=weight)
                loss = aggregate(tok_loss, mask, g.loss_agg, total_tokens, len(items))
                loss.backward()
                sums["loss"] += loss.item() / g.ppo_epochs
                if kl is not None:
                    sums["kl"] += float((kl.detach() * mask).sum()) / total_tokens / g.ppo_epochs
                clipped = ((ratio - 1).abs() > g.clip_eps).float()
                sums["clip_frac"] += float((clipped * mask).sum()) / total_tokens / g.ppo_epochs
            norm = torch.nn.utils.clip_grad_norm_(params, g.max_grad_norm)
            sums["grad_norm"] += float(norm) / g.ppo_epochs
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return UpdateStats(**sums)


def _neutral_unparsed(rewards: list[float], classes) -> list[float]:
    """Unparsable samples at the mean reward of the parsed ones: their advantage is 0, so the update neither
    rewards nor punishes the answer format, only which answer was given."""
    parsed = [r for r, c in zip(rewards, classes) if c is not None]
    if not parsed:
        return list(rewards)
    mean = sum(parsed) / len(parsed)
    return [r if c is not None else mean for r, c in zip(rewards, classes)]


def _padded(rows: list[np.ndarray | None], like: torch.Tensor) -> torch.Tensor:
    """Per-token arrays right-padded to `like`'s [B, T]; a row without one (an exact engine) copies `like`."""
    out = like.detach().clone()
    for b, r in enumerate(rows):
        if r is not None:
            out[b, :len(r)] = torch.as_tensor(r, dtype=out.dtype, device=out.device)
    return out


def _certainty(comps: list[Completion]) -> dict[str, float]:
    """Label-free certainty indicators for the collapse monitor (URLVR), when token stats were recorded."""
    stats = [c.stats for c in comps if c.stats is not None and len(c.stats.logprobs)]
    if not stats:
        return {}
    return {"self_certainty": float(np.mean([s.self_certainty.mean() for s in stats])),
            "token_entropy": float(np.mean([s.entropy.mean() for s in stats]))}


def _mean_dicts(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for r in rows for k in r}
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in sorted(keys)}
