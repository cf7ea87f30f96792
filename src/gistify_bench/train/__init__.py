"""The harness's trainers: the reinforcement controller of `reinforce-rl` (controller), the small VLM (vlm), vist
(vist/), vist's oracle probe (oracle) and vist's teacher (teacher: the LLM's own states as memory). Each takes a
dataclass config (flags map onto its fields, see gistify_bench.options), writes under --out, and only --ship
copies weights into the package."""
