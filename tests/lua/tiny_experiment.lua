-- The tiny experiment of the end-to-end tests (loaded with `require
-- "tiny_experiment"`): a 40-clip synthetic corpus, the arguments that run
-- experiments/resnet34.lua on it with a width-4 network in a few seconds,
-- and the checks on what a run leaves.
--
--   local X = require "tiny_experiment"
--   local data = X.corpus(tmpdir{ create = false, keep = true })  -- generated once per path
--   local code, text = X.run(X.args(data, out) .. " --training.epochs=1", "ENV=1")
--   X.same_tensors(mt.load(a), mt.load(b))      -- every tensor equal, or an error naming it
local A = require "assert"
local F = require "files"

local M = {}

--- 40 clips, 4 machine types, in `path` (generated when it has none yet).
function M.corpus(path)
    if not F.exists(path .. "/dataset.csv") then
        require("machrt.synth").generate(path, { clips = 40, seed = 5 })
    end
    return path
end

--- The command-line settings of a tiny run: 32 training clips in 4
--- batches of 8, 8 validation clips, 2 epochs.
function M.args(data, out)
    return table.concat({
        "--dataset.data_folder=" .. data, "--dataset.train_dataframe=" .. data .. "/dataset.csv",
        "--architecture.width=4", "--training.batch_size=8", "--training.epochs=2",
        "--environment.number_of_workers=2", "--environment.seed=11",
        "--audio.training_chunk_seconds=4", "--prediction.inference_chunk_seconds=5",
        "--output_directory=" .. out,
    }, " ")
end

--- Runs the experiment as a user does; returns the exit status and output.
function M.run(args, env)
    return F.run(string.format("%s ./machrt experiments/resnet34.lua %s", env or "", args))
end

--- The run folder of fold 4 under output_directory `out`.
function M.fold_dir(out) return out .. "/final_machinetype_audio_classification/fold4" end

--- Every tensor of a equals b's (names, shapes, values); returns the count.
function M.same_tensors(a, b)
    local n = 0
    for name, x in pairs(a) do
        local y = b[name]
        A.truthy(y, "tensor " .. name .. " missing from the second checkpoint")
        A.eq(table.concat(x:shape(), "x"), table.concat(y:shape(), "x"), name .. " shape")
        if x:numel() > 0 then
            local d = (x:float() - y:float()):abs():max()
            A.eq(d, 0, name .. " differs (max abs diff)")
        end
        n = n + 1
    end
    for name in pairs(b) do A.truthy(a[name], "extra tensor " .. name) end
    return n
end

return M
