"""What a training run is: ``TrainConfig`` (every option of ``rtrl train``), the named presets,
and the agent a config builds. The lowest floor of the training code: no loop lives here."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from rtrl.rl.agent import ACTIVATIONS, CORES, CRITICS, INITS, RING_CORES, STEMS, Agent
from rtrl.rl.learner import LearnerConfig, check_hyper_parameters
from rtrl.utils import resolve_device

MAX_SEED = 100_000  # env seeds are seed * 10_007 + ...: kept below 2^31 (ALE's and others' seeds are 32-bit)
ALGOS = ("impala", "ppo", "stream-ac", "stream-q")  # R2AC, PPO, stream AC(λ) and Q(λ) (rtrl.rl.stream*)
CHECKPOINT_KIND = {"impala": "r2ac", "ppo": "ppo", "stream-ac": "stream-ac", "stream-q": "stream-q"}
STREAM_ALGOS = ("stream-ac", "stream-q")


@dataclass
class TrainConfig:
    algo: str = "impala"  # "impala" (R2AC: actors, V-trace) or "ppo" (synchronous, see rtrl.rl.ppo)
    env: str = "rtrl-Recall-v0"
    core: str = "rtrl-elstm"
    hidden_size: int = 64
    encoder_width: int = 64
    stem: str = "auto"  # "impala" (pixels), "nature" (pixels, cheaper), "mlp" (vectors); auto picks by obs shape
    forget_bias: float = 0.0  # eLSTM cores only
    r_max: float = 1.0  # LRU and RTU cores only: their ring init draws |λ| up to r_max (the paper's 1)
    unroll: int = 10  # M: steps per rollout; 1 = fully online R2AC
    num_envs: int = 256  # streams per actor (measured: docs/benchmarks.md, "R2AC throughput")
    num_actors: int = -1  # 0 = synchronous, in-process; -1 = auto: one actor process beside the learner
    # when there are two cores or more (acting overlaps learning), else 0; always 0 for PPO
    batch_rollouts: int = 1  # rollouts (of distinct actors) per learner update
    total_frames: int = 200_000  # agent steps over all streams
    optimizer: str = "rmsprop"
    lr: float = 3e-3  # the paper: 6e-4 at its scale (see PRESETS["paper"]); 3e-3 measured on our small tasks
    rms_eps: float = 0.01
    rms_alpha: float = 0.99
    grad_clip: float = 40.0
    discount: float = 0.99
    value_weight: float = 0.5
    entropy_weight: float = 0.01
    reward_clip: float = 1.0
    lr_decay: bool = True
    seed: int = 0
    checkpoint_every: int = 200  # updates
    log_every: int = 5  # updates
    eval_episodes: int = 100
    threads: int = 1  # torch threads of the learner process (0 = torch's default); small models run best on 1
    device: str = "auto"  # the learner's: "auto" (CUDA when present), "cpu", "cuda", "cuda:<i>"; actors act on the CPU
    load_stem: str = ""  # a run folder or checkpoint whose stem (encoder) initialises this agent's
    freeze_stem: bool = False  # keep the stem fixed (the paper's DMLab recipe: pretrain with TBPTT, freeze)
    actor_restarts: int = 3  # restarts in a row of a failing actor (after 1 s, 2 s, 4 s...), then stop
    backend: str = "local"  # actors as local processes ("local") or Ray actors ("ray"); with num_actors >= 1
    ray_address: str = ""  # join this Ray cluster (empty: start a local Ray instance)
    # PPO only (algo = "ppo"); value_weight and entropy_weight above are PPO's vf_coef and ent_coef
    ppo_epochs: int = 4  # passes over each rollout
    ppo_minibatches: int = 4  # minibatches per epoch: by env (must divide num_envs); core none: by transition
    clip_coef: float = 0.2  # the surrogate's ratio clip (and the value clip)
    clip_value: bool = True  # clip the value loss around the rollout's values (else plain squared error)
    clip_decay: bool = False  # anneal the surrogate's ratio clip to 0 with the learning rate (rl-baselines3-zoo's lin_0.2)
    gae_lambda: float = 0.95
    # The standard machinery of cleanrl's and SB3's PPO (rtrl.rl.normalize); the presets chosen from the
    # env turn it on (PRESETS, FAMILY_PRESETS), these defaults are what runs made before it had.
    obs_norm: bool = False  # normalise vector observations by running statistics (clipped to ±10)
    reward_scale: bool = False  # divide rewards by the running std of the discounted return (then reward_clip)
    critic: str = "shared"  # "separate": the value head has its own stem and core ("shared": one trunk)
    activation: str = "relu"  # the MLP stem's and the RTU's output: "relu" or "tanh"
    init: str = "default"  # "orthogonal": stems and heads orthogonal, gains √2 / 0.01 (policy) / 1 (value)
    # stream-ac only (rtrl.rl.stream): ObGD's trace decay λ and bounds κ; lr, discount, entropy_weight,
    # obs_norm, reward_scale as above; encoder_width is the width of the 2-layer MLP above the core
    trace_lambda: float = 0.8
    kappa_policy: float = 3.0
    kappa_value: float = 2.0

    def validate(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}; choose one of {ALGOS}")
        if self.algo == "ppo":
            self._validate_ppo()
        if self.algo in STREAM_ALGOS:
            self._validate_stream()
        if self.core not in CORES:
            raise ValueError(f"unknown core {self.core!r}; choose one of {CORES}")
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}; choose one of {STEMS}")
        for name, allowed in (("critic", CRITICS), ("activation", tuple(ACTIVATIONS)), ("init", INITS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {allowed}")
        if self.unroll < 1:
            raise ValueError(f"unroll length M must be >= 1, got {self.unroll}")
        for name in ("hidden_size", "encoder_width", "num_envs", "batch_rollouts", "total_frames",
                     "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.backend not in ("local", "ray"):
            raise ValueError(f"unknown backend {self.backend!r}; choose 'local' or 'ray'")
        if self.backend == "ray" and self.num_actors < 1:
            raise ValueError("--backend ray needs --num-actors >= 1")
        resolve_device(self.device)  # an unknown name, or CUDA where there is none, fails here
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = torch's default), got {self.threads}")
        if self.num_actors < -1:
            raise ValueError(f"num_actors must be >= 0 (0 = synchronous) or -1 (auto), got {self.num_actors}")
        if self.num_actors > 0 and self.batch_rollouts > self.num_actors:
            raise ValueError(f"batch_rollouts ({self.batch_rollouts}) cannot exceed num_actors ({self.num_actors}): "
                             "a batch never holds two rollouts of one actor")
        check_hyper_parameters(self)  # lr, grad_clip, discount, the loss weights: as the learner and PPO check them
        # what seeds the envs (env seeds are derived from it, and some envs take 32-bit seeds) and the agent
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {self.seed}")
        if not math.isfinite(self.forget_bias):
            raise ValueError(f"forget_bias must be a finite number, got {self.forget_bias}")
        if not 0 < self.r_max <= 1:
            raise ValueError(f"r_max must be in (0, 1] (the largest |λ| of the ring init), got {self.r_max}")
        if self.r_max != 1.0 and self.core not in RING_CORES:
            raise ValueError(f"--r-max sets the ring init of the LRU and RTU cores {RING_CORES}; the {self.core} "
                             "core has none")
        if self.actor_restarts < 0:
            raise ValueError(f"actor_restarts must be >= 0 (0: the first fault stops the run), "
                             f"got {self.actor_restarts}")
        if self.eval_episodes < 0:
            raise ValueError(f"eval_episodes must be >= 0 (0: no evaluation), got {self.eval_episodes}")

    def _validate_ppo(self) -> None:
        if self.num_actors > 0:
            raise ValueError("--algo ppo runs synchronously in one process: use --num-envs for more environments "
                             f"and leave --num-actors at 0 (got {self.num_actors})")
        if self.batch_rollouts != 1:
            raise ValueError(f"--batch-rollouts is for --algo impala; PPO takes one rollout of all --num-envs "
                             f"per update (got {self.batch_rollouts})")
        for name in ("ppo_epochs", "ppo_minibatches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.core == "none":  # no state: minibatches of single transitions, shuffled
            if (self.num_envs * self.unroll) % self.ppo_minibatches:
                raise ValueError(f"ppo_minibatches ({self.ppo_minibatches}) must divide num_envs x unroll "
                                 f"({self.num_envs * self.unroll}): minibatches of transitions, of equal size")
        elif self.num_envs % self.ppo_minibatches:
            raise ValueError(f"ppo_minibatches ({self.ppo_minibatches}) must divide num_envs ({self.num_envs}): "
                             "a recurrent core's minibatches are whole environments' rollouts, of equal size")
        if not (self.clip_coef > 0 and math.isfinite(self.clip_coef)):
            raise ValueError(f"clip_coef must be a positive number, got {self.clip_coef}")
        if not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")

    def _validate_stream(self) -> None:
        from rtrl.rl.stream import STREAM_CORES

        if self.num_envs != 1 or self.num_actors > 0:
            raise ValueError(f"--algo {self.algo} learns from one environment in one process: --num-envs 1 "
                             f"and --num-actors 0 (got {self.num_envs} and {self.num_actors})")
        if self.core not in STREAM_CORES:
            raise ValueError(f"core {self.core!r} cannot stream; choose one of {STREAM_CORES}")
        if self.load_stem or self.freeze_stem:
            raise ValueError(f"--algo {self.algo} has no stem below its core: leave --load-stem and "
                             "--freeze-stem unset")
        if not 0 <= self.trace_lambda <= 1:
            raise ValueError(f"trace_lambda must be in [0, 1], got {self.trace_lambda}")
        for name in ("kappa_policy", "kappa_value"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)}")

    def resolved(self) -> "TrainConfig":
        """This config with ``num_actors = -1`` (auto) made concrete for this machine."""
        if self.num_actors != -1:
            return self
        auto = 0 if self.algo != "impala" or (os.cpu_count() or 1) < 2 else 1
        return dataclasses.replace(self, num_actors=auto)

    @property
    def num_streams(self) -> int:
        return max(self.num_actors, 1) * self.num_envs

    @property
    def frames_per_update(self) -> int:
        return self.unroll * self.num_envs * self.batch_rollouts  # PPO: batch_rollouts is 1

    def learner_config(self) -> LearnerConfig:
        total = math.ceil(self.total_frames / self.frames_per_update) if self.lr_decay else 0
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(LearnerConfig) if hasattr(self, f.name)}
        return LearnerConfig(**shared, total_updates=total)


PRESETS = {
    # The defaults: the README's task (Recall) solved in 200k frames, popgym RepeatPreviousEasy in 400k
    # (rtrl-lru), a few seconds each on 2 cores (docs/scaling.md has the measurements behind the sizes).
    "small": TrainConfig(),
    # PPO (`rtrl train --algo ppo` starts here): Adam 3e-3, 256 envs in 2 minibatches of 128, rollouts of
    # 20 steps, 2 epochs: RepeatPreviousEasy and Recall6 solved in 400k frames (docs/scaling.md; the
    # earlier 16 envs x 4 epochs x 4 minibatches learned as well per frame and ran 4-5x slower).
    # From Python: dataclasses.replace(PRESETS["ppo"], ...).
    "ppo": TrainConfig(algo="ppo", optimizer="adam", lr=3e-3, unroll=20, num_envs=256, ppo_epochs=2,
                       ppo_minibatches=2, grad_clip=0.5, lr_decay=True, log_every=5, checkpoint_every=50),
    # The paper's R2AC hyper-parameters (its code's READMEs; DMLab/ProcGen/Atari scale).
    "paper": TrainConfig(hidden_size=512, unroll=100, num_envs=1, num_actors=32, batch_rollouts=32, lr=6e-4,
                         total_frames=100_000_000, checkpoint_every=1000, log_every=100),
}
# ProcGen Chaser, hard (the paper's Sec. 4.2): N = 256, M = 50, 200 M steps; and its memory mode.
PRESETS["procgen-chaser"] = dataclasses.replace(PRESETS["paper"], env="procgen-chaser-hard-v0", hidden_size=256,
                                                unroll=50, total_frames=200_000_000)
PRESETS["procgen-maze-memory"] = dataclasses.replace(PRESETS["procgen-chaser"], env="procgen-maze-memory-v0")
# The paper's five Atari games (its Table 2): N = 256, M = 50, 200 M steps, RMSProp 6e-4, 32 actors.
for _game in ("Breakout", "Gravitar", "MsPacman", "Qbert", "Seaquest"):
    PRESETS[f"atari-{_game}"] = dataclasses.replace(PRESETS["paper"], env=f"ALE/{_game}-v5", hidden_size=256,
                                                    unroll=50, total_frames=200_000_000, eval_episodes=30)

# Presets chosen from the environment: `rtrl train` (and rtrl.api.train) without a preset picks one by
# the env's family (`family_of`), the algorithm (PPO unless --algo impala) and whether the core is
# recurrent (the default, the exact-RTRL RTU docs/results.md recommends) or feedforward (`--core none`:
# the `-ff` presets), prints it, and every option given overrides it. Each family's PPO preset is the
# field's recipe for such tasks (rl-baselines3-zoo's, cleanrl's) with observation normalisation, tanh
# MLPs and orthogonal init; docs/reference.md has the measurements behind each choice.
FAMILIES = {
    "vector": "discrete actions, vector observations: classic control, ...",
    "box": "Box actions, vector observations: MuJoCo, MountainCarContinuous, ...",
    "memory": "a memory task: rtrl-Recall, popgym, MiniGrid",
    "pixels": "image observations: Atari, ProcGen, Memory Gym, Memory Maze",
    "pendulum": "Pendulum-v1 and its masks, by name: the zoo's PendulumNoVel recipe",
}
# Envs whose own recipe beats their family's (as rl-baselines3-zoo keeps one per env), by the env's
# name without a mask prefix (PositionOnly/, VelocityOnly/); PPO only.
ENV_PRESETS = {"Pendulum-v1": "ppo-pendulum"}
_STANDARD = dict(obs_norm=True, activation="tanh", init="orthogonal")
# rl-baselines3-zoo's CartPole recipe (and sb3-contrib's for CartPoleNoVel): 8 envs x 32 steps, one
# minibatch, 20 epochs, Adam 1e-3 decaying, gamma 0.98, GAE 0.8, no entropy bonus. The feedforward agent
# is SB3's PPO as the zoo runs it: separate actor and critic MLPs, the ratio clip annealed with the rate
# (lin_0.2), an unclipped value loss weighted as SB3 weights its (vf_coef 0.5 of a plain squared error =
# 1.0 of our half squared error), and raw observations as the zoo's (normalised, CartPole-v1 took 87 k
# frames to a last-100 mean of 475, median of seeds 0-5; raw, 69 k). The recurrent agent has a second RTU
# for its critic, an unclipped value loss and Adam 5e-4: on PositionOnly/CartPole-v1 at 200 k frames,
# seeds 1 and 2, 490 and 500 (475 first reached at 65 k and 83 k frames), the best of 13 variants of
# critic, value clip, rate and clip decay tried (docs/reference.md). Not robust: on a rebuilt installation (same code)
# seeds 0-2 gave 296, 500, 245 (was 500, 490, 500; b85e55d's code gives the same 245 there).
_VECTOR = dict(num_envs=8, unroll=32, ppo_epochs=20, ppo_minibatches=1, lr=1e-3, discount=0.98, gae_lambda=0.8,
               entropy_weight=0.0, reward_clip=0.0, total_frames=200_000, **_STANDARD)
# cleanrl's MuJoCo recipe (ppo_continuous_action.py): 2048 steps an update, 10 epochs of 32 minibatches of
# 64 transitions, Adam 3e-4 decaying, no entropy bonus, rewards divided by the running std of the discounted
# return and clipped to ±10. A recurrent core's minibatch is whole envs' rollouts, each a 64-step exact-RTRL
# pass, so the recurrent preset takes 10 epochs of 8 minibatches of 4 envs (80 gradient steps a rollout; 10 x 32
# of one env each ran ~2x slower per frame). The RTU at 2 M frames, seeds 0-2: PositionOnly/Hopper-v5
# 1112 ± 111 (the RTU paper's 4 epochs of 4 minibatches: 770 ± 80), VelocityOnly/Hopper-v5 428 ± 96 (501 ± 38):
# higher on every P seed, lower on two V seeds (docs/reference.md). A second RTU for the critic scored the same
# on seed 0 (P 1269 vs 1262, V 566 vs 558) at 1.5x the time.
_BOX = dict(num_envs=32, unroll=64, ppo_epochs=10, lr=3e-4, entropy_weight=0.0, reward_scale=True, reward_clip=10.0,
            total_frames=1_000_000, **_STANDARD)
PRESETS.update({
    "ppo-vector": dataclasses.replace(PRESETS["ppo"], core="rtrl-rtu", hidden_size=256, critic="separate",
                                      clip_value=False, **dict(_VECTOR, lr=5e-4)),
    "ppo-vector-ff": dataclasses.replace(PRESETS["ppo"], core="none", critic="separate", clip_decay=True,
                                         clip_value=False, value_weight=1.0, **dict(_VECTOR, obs_norm=False)),
    "ppo-box": dataclasses.replace(PRESETS["ppo"], core="rtrl-rtu", hidden_size=256, critic="shared",
                                   **dict(_BOX, ppo_minibatches=8)),
    "ppo-box-ff": dataclasses.replace(PRESETS["ppo"], core="none", critic="separate", ppo_minibatches=32, **_BOX),
    # Pendulum-v1 (and PositionOnly/, VelocityOnly/): the zoo's PendulumNoVel recipe (γ 0.9, GAE 0.95, 10
    # epochs, Adam 1e-3 constant) with rollouts of 4 envs x 256 steps in 4 minibatches of one env (the zoo:
    # 4 x 1024, minibatches of 64 steps). PositionOnly/Pendulum-v1, the RTU, 100 k frames, seeds 0-2:
    # -382, -302, -253 when chosen, -361, -436, -386 on today's installation (ppo-box: -965, -1036, -977);
    # docs/reference.md has the variants tried.
    "ppo-pendulum": dataclasses.replace(PRESETS["ppo"], core="rtrl-rtu", hidden_size=256, critic="shared",
                                       **dict(_BOX, num_envs=4, unroll=256, ppo_epochs=10, ppo_minibatches=4,
                                              lr=1e-3, lr_decay=False, discount=0.9, gae_lambda=0.95,
                                              total_frames=100_000)),
    # the `ppo` preset's sizes, measured on popgym and Recall (docs/scaling.md, docs/promise.md)
    "ppo-memory": dataclasses.replace(PRESETS["ppo"], core="rtrl-rtu", hidden_size=256),
    # cleanrl's Atari recipe (ppo_atari_lstm.py): 8 envs x 128 steps, 4 minibatches, 4 epochs, lr 2.5e-4, clip 0.1
    "ppo-pixels": dataclasses.replace(PRESETS["ppo"], core="rtrl-rtu", hidden_size=256, stem="nature", num_envs=8,
                                      unroll=128, ppo_epochs=4, ppo_minibatches=4, lr=2.5e-4, clip_coef=0.1,
                                      total_frames=1_000_000, init="orthogonal"),
    # R2AC (--algo impala): the `small` preset with the RTU at M = 5 (docs/results.md's choice for R2AC).
    # 32 streams, not 256: CartPole-v1 at 500 k frames, feedforward, seed 1: 256 streams 253 (390 updates),
    # 64 streams 500, 32 streams 500 (475 reached at 135 k); observation normalisation 253 vs 107 without.
    # Reward scaling (as PPO's) with tanh and orthogonal init and RMSProp 1e-3: Acrobot-v1 (500 k, seeds 0-2) -97 ±
    # 1, CartPole-v1 500 on every seed. Without either of the first two the policy collapsed or stayed random and
    # never reached Acrobot's goal (-500); with both at 3e-3, Acrobot -90 ± 2 but CartPole 455 ± 57 (one seed fell
    # from 500 to 250 twice).
    "r2ac-vector": dataclasses.replace(PRESETS["small"], core="rtrl-rtu", hidden_size=256, unroll=5, num_envs=32,
                                       reward_scale=True, lr=1e-3, total_frames=500_000, **_STANDARD),
    "r2ac-box": dataclasses.replace(PRESETS["small"], core="rtrl-rtu", hidden_size=256, unroll=5, num_envs=32,
                                    obs_norm=True, entropy_weight=0.0, total_frames=1_000_000),
    "r2ac-memory": dataclasses.replace(PRESETS["small"], core="rtrl-rtu", hidden_size=256, unroll=5),
    "r2ac-pixels": dataclasses.replace(PRESETS["small"], core="rtrl-rtu", hidden_size=256, unroll=5, stem="nature",
                                       total_frames=1_000_000),
})
# Stream AC(λ) (`rtrl train --algo stream-ac`): Elsayed et al.'s settings (lr 1 with ObGD, λ 0.8, κ 3 / 2,
# entropy 0.01, observations normalised and rewards scaled, 2 x 128 MLP) and Farr et al.'s 64 RTU features.
PRESETS["stream"] = TrainConfig(algo="stream-ac", core="rtrl-rtu", hidden_size=64, encoder_width=128,
                                num_envs=1, num_actors=0, optimizer="obgd", lr=1.0, discount=0.99,
                                entropy_weight=0.01,
                                reward_clip=0.0, obs_norm=True, reward_scale=True, total_frames=100_000,
                                log_every=1, checkpoint_every=20, eval_episodes=100)
# Stream Q(λ) (`--algo stream-q`): the same, ε-greedy from 1 to 0.01 over the first 20 % of the steps, κ 2
PRESETS["stream-q"] = dataclasses.replace(PRESETS["stream"], algo="stream-q", entropy_weight=0.0)
MEMORY_PREFIXES = ("rtrl-Recall", "rtrl-MemoryChain", "popgym-", "MiniGrid-")


def family_of(env_name: str, spec: "EnvSpec") -> str:
    """The family of ``FAMILIES`` an env belongs to: pixels by its observations, rtrl's memory
    families by name, the rest by its action space."""
    if len(spec.obs_shape) == 3:
        return "pixels"
    if env_name.startswith(MEMORY_PREFIXES):
        return "memory"
    return "box" if spec.continuous else "vector"


PIXEL_PREFIXES = ("ALE/", "procgen-", "MemoryMaze-", "MemoryGym-")


def preset_for(env_name: str, algo: str = "ppo", spec: "Optional[EnvSpec]" = None, core: Optional[str] = None) -> str:
    """The name of the preset ``rtrl train --env env_name [--algo algo] [--core core]`` starts from
    (see ``FAMILIES``): ``<ppo|r2ac>-<family>``, or its ``-ff`` twin where one exists for ``core ==
    "none"``. ``spec``: the env's, if known; else rtrl's families are told by name and any other env
    is made once to read its spaces."""
    if spec is None and env_name.startswith(MEMORY_PREFIXES):
        family = "memory"
    elif spec is None and env_name.startswith(PIXEL_PREFIXES):
        family = "pixels"
    else:
        if spec is None:
            from rtrl.rl.envs import make_env

            probe = make_env(env_name, 1)
            spec = EnvSpec.of(probe)
            probe.close()
        family = family_of(env_name, spec)
    if algo in STREAM_ALGOS:
        return "stream" if algo == "stream-ac" else "stream-q"
    name = f"{'ppo' if algo == 'ppo' else 'r2ac'}-{family}"
    if algo == "ppo" and env_name.split("/")[-1] in ENV_PRESETS:
        name = ENV_PRESETS[env_name.split("/")[-1]]
    return f"{name}-ff" if core == "none" and f"{name}-ff" in PRESETS else name


def describe_preset(name: str) -> str:
    """One line naming a preset's family and its main choices (printed at the start of a run)."""
    cfg, family = PRESETS[name], name.split("-")[1] if name.count("-") else name
    if cfg.algo in STREAM_ALGOS:
        kind = "stream AC(λ)" if cfg.algo == "stream-ac" else "stream Q(λ)"
        return (f"preset {name}: {kind}, core {cfg.core} {cfg.hidden_size}, MLP {cfg.encoder_width}, "
                f"one env, ObGD lr {cfg.lr:g} λ {cfg.trace_lambda:g}")
    algo = "PPO" if cfg.algo == "ppo" else "R2AC"
    sizes = f"{cfg.num_envs} envs x {cfg.unroll} steps"
    if cfg.algo == "ppo":
        sizes += f", {cfg.ppo_epochs} epochs x {cfg.ppo_minibatches} minibatch{'es' if cfg.ppo_minibatches > 1 else ''}"
    core = "feedforward" if cfg.core == "none" else f"core {cfg.core} {cfg.hidden_size}"
    extras = [x for x, on in (("obs normalised", cfg.obs_norm), ("rewards scaled", cfg.reward_scale),
                              ("separate critic", cfg.critic == "separate")) if on]
    return (f"preset {name} ({FAMILIES.get(family, family)}): {algo}, {core}, {sizes}, {cfg.optimizer} {cfg.lr:g}"
            + "".join(f", {x}" for x in extras))


MAY_CHANGE = ("total_frames", "threads", "eval_episodes", "log_every", "checkpoint_every", "backend", "ray_address",
              "device", "actor_restarts")  # a run started on a GPU resumes on a CPU, and the other way


@dataclass(frozen=True)
class EnvSpec:
    """What an agent and a rollout buffer need to know of an environment."""

    obs_shape: tuple[int, ...]
    obs_dtype: torch.dtype  # torch.float32 for vectors, torch.uint8 for pixels
    num_actions: int  # continuous: the size of the action vector
    continuous: bool = False  # Box actions (a Gaussian policy)
    action_low: tuple = ()  # Box actions: the env's flat bounds (±inf where unbounded), for acting outside rtrl
    action_high: tuple = ()

    @staticmethod
    def of(env) -> "EnvSpec":
        """The spec of a ``VecEnv``."""
        continuous = bool(getattr(env, "continuous", False))
        space = getattr(env, "action_space", None) if continuous else None
        bounds = [tuple(float(v) for v in np.asarray(b, np.float64).ravel()) for b in (space.low, space.high)] \
            if space is not None else [(), ()]
        return EnvSpec(tuple(env.obs_shape), torch.from_numpy(np.zeros(0, env.obs_dtype)).dtype, env.num_actions,
                       continuous, *bounds)

    def to_json(self) -> dict:
        return dict(obs_shape=list(self.obs_shape), obs_dtype=str(self.obs_dtype).removeprefix("torch."),
                    num_actions=self.num_actions, continuous=self.continuous, action_low=list(self.action_low),
                    action_high=list(self.action_high))

    @staticmethod
    def from_json(d: dict) -> "EnvSpec":
        return EnvSpec(tuple(d["obs_shape"]), getattr(torch, d["obs_dtype"]), int(d["num_actions"]),
                       bool(d.get("continuous", False)), tuple(d.get("action_low", ())), tuple(d.get("action_high", ())))


def build_agent(cfg: TrainConfig, env) -> Agent:
    """The agent ``cfg`` describes for ``env`` (a ``VecEnv`` or an :class:`EnvSpec`), on the CPU."""
    if cfg.algo == "stream-q":
        from rtrl.rl.stream_q import QAgent

        if getattr(env, "continuous", False):
            raise ValueError("--algo stream-q needs discrete actions; use --algo stream-ac for Box actions")
        return QAgent(env.obs_shape, env.num_actions, cfg.core, cfg.hidden_size, cfg.encoder_width,
                      obs_norm=cfg.obs_norm, activation=cfg.activation, forget_bias=cfg.forget_bias, r_max=cfg.r_max)
    if cfg.algo == "stream-ac":
        from rtrl.rl.stream import StreamAgent

        return StreamAgent(env.obs_shape, env.num_actions, cfg.core, cfg.hidden_size, cfg.encoder_width,
                           continuous=bool(getattr(env, "continuous", False)), obs_norm=cfg.obs_norm,
                           activation=cfg.activation, forget_bias=cfg.forget_bias, r_max=cfg.r_max)
    agent = Agent(env.obs_shape, env.num_actions, cfg.core, cfg.hidden_size, cfg.encoder_width, cfg.forget_bias,
                  cfg.stem, continuous=bool(getattr(env, "continuous", False)), obs_norm=cfg.obs_norm,
                  critic=cfg.critic, activation=cfg.activation, init=cfg.init, r_max=cfg.r_max)
    if cfg.freeze_stem:
        agent.stem.requires_grad_(False)
    return agent
