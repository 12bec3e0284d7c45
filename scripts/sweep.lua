-- Hyperparameter sweeps: runs an experiment once per trial, each in its own
-- folder and process, and ranks the trials by a validation metric.
--
--   machrt scripts/sweep.lua experiments/resnet34.lua \
--       --grid training.learning_rate=1e-3,3e-4 --grid training.batch_size=16,32
--   machrt scripts/sweep.lua experiments/resnet34.lua --random 8 \
--       --range training.learning_rate=1e-4:3e-3:log --choice architecture.pool=GeM,Avg
--   ... --jobs 2 --training.epochs=1      -- two trials at once, a fixed override
--   ... --slurm --submit --slurm-parallel 4 -- one Slurm array task per trial
--
-- See `--help`, modules/machrt/sweep.lua and modules/machrt/sweep_slurm.lua.

local sweep = require "machrt.sweep"

-- A mistake in the arguments or the experiment's settings is raised as a
-- user's error (one line, exit 2, see runtime/main.c); failed trials exit 1.
local opts = sweep.parse_args(arg)
if opts.help then
    io.write(sweep.USAGE)
    os.exit(0)
end
-- The trials run the same host binary as this script.
local host = arg[-1] or "machrt"
local slurm = require "machrt.sweep_slurm"
local ok
if slurm.wanted(opts) then ok = slurm.main(opts, host, arg[0]) else ok = sweep.run(opts, host) end
os.exit(ok and 0 or 1)
