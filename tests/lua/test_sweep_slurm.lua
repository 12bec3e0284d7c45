-- scripts/sweep.lua --slurm against a real single-host Slurm started for
-- the test (tests/lua/slurm_cluster.lua): a 4-trial sweep submitted as a
-- job array ends with the same results.csv as the same sweep run locally,
-- and a resubmission finds nothing left to run. When the daemons cannot
-- start, the test is reported skipped with the reason and the logs, never
-- passed. The script text itself is checked without Slurm.
local A = require "assert"
local mt = require "machrt"
local sys = require "machrt.sys"
local F = require "files"
local slurm = require "machrt.sweep_slurm"

local tests, test, tmpdir, defer = F.suite()
local read = F.read

local corpus
local function tiny_corpus()
    if not corpus then
        corpus = tmpdir{ create = false, keep = true }
        require("machrt.synth").generate(corpus, { clips = 20, seed = 3 })
    end
    return corpus
end

-- Thread counts are fixed so that both sides compute the same bits.
local function sweep_args(data, out)
    return table.concat({
        "--grid training.learning_rate=1e-3,3e-4", "--grid training.batch_size=4,8", "--out " .. out,
        "--architecture.width=4", "--training.epochs=1", "--audio.training_chunk_seconds=2",
        "--prediction.inference_chunk_seconds=2", "--environment.threads=1", "--environment.number_of_workers=1",
        "--dataset.data_folder=" .. data, "--dataset.train_dataframe=" .. data .. "/dataset.csv",
    }, " ")
end

local function sweep(args, env)
    return F.run(string.format("%s timeout 600 ./machrt scripts/sweep.lua experiments/resnet34.lua %s", env or "", args))
end

-- results.csv without the seconds column (wall time differs by nature).
local function results_without_seconds(path)
    local rows = F.csv_rows(path)
    for _, r in ipairs(rows) do table.remove(r) end
    return rows
end

test("array spec: ranges of consecutive task ids", function()
    A.eq(slurm.array_spec{ 0, 1, 2, 3 }, "0-3")
    A.eq(slurm.array_spec{ 1, 3, 4, 5, 9 }, "1,3-5,9")
    A.eq(slurm.array_spec{ 2 }, "2")
end)

test("--slurm writes the job-array script: resources, template, one task per trial", function()
    local data, out = tiny_corpus(), tmpdir{ create = false }
    local template = tmpdir() .. "/template.sh"
    sys.write_file(template, "#SBATCH --qos=short\nmodule load openmpi\n")
    local code, text = sweep(sweep_args(data, out) .. " --slurm --slurm-parallel 2 --slurm-ntasks 2"
        .. " --slurm-time 0:10:00 --slurm-cpus-per-task 1 --slurm-sbatch=--account=acoustics"
        .. " --slurm-template " .. template)
    A.eq(code, 0, text)
    A.truthy(text:find("sbatch " .. out .. "/sweep.sbatch", 1, true), "how to submit it:\n" .. text)
    local s = read(out .. "/sweep.sbatch")
    for _, want in ipairs{ "#SBATCH --array=0-3%2\n", "#SBATCH --ntasks=2\n", "#SBATCH --time=0:10:00\n",
                                                  "#SBATCH --cpus-per-task=1\n", "#SBATCH --account=acoustics\n", "#SBATCH --qos=short\n",
                                                  "module load openmpi\n", '--slurm-task="$SLURM_ARRAY_TASK_ID"', "flock ",
                                                  "--slurm-results" } do
        A.truthy(s:find(want, 1, true), ("the script has %q:\n%s"):format(want, s))
    end
    A.truthy(not s:find("--slurm ", 1, true) and not s:find("--submit", 1, true),
        "the tasks do not submit again:\n" .. s)
    -- Every #SBATCH line comes before the first command (sbatch stops reading there).
    local seen_command = false
    for l in s:gmatch("[^\n]+") do
        if l:match("^#SBATCH") then A.truthy(not seen_command, "an #SBATCH line after a command:\n" .. s) end
        if not l:match("^#") then seen_command = true end
    end
    A.truthy(not sys.stat(out .. "/trial_001"), "nothing ran")
    code, text = sweep(sweep_args(data, out) .. " --slurm --jobs 2")
    A.truthy(code ~= 0 and text:find("--slurm-parallel", 1, true), text)
    code, text = sweep(sweep_args(data, out) .. " --submit")
    A.truthy(code ~= 0 and text:find("--submit and --slurm-wait need --slurm", 1, true), text)
end)

test("a 4-trial sweep as a Slurm job array: the same results.csv as a local run", function()
    local data = tiny_corpus()
    local dir = tmpdir()
    local cluster, why = require("slurm_cluster").start(dir)
    if not cluster then
        io.stderr:write("\n*** SKIP: the Slurm test could not start its daemons: ", why, "\n\n")
        A.skip("no single-host Slurm: " .. why:match("^[^\n]*"))
    end
    defer(function() cluster:stop() end)
    local here, there = tmpdir{ create = false }, tmpdir{ create = false }
    local code, text = sweep(sweep_args(data, here))
    A.eq(code, 0, "local sweep:\n" .. text)
    code, text = sweep(sweep_args(data, there) .. " --slurm --submit --slurm-wait --slurm-parallel 2", cluster.env)
    A.eq(code, 0, "Slurm sweep:\n" .. text .. "\n" .. cluster:logs())
    A.truthy(text:find("submitted job array %d+"), text)
    for i = 0, 3 do
        A.truthy(sys.stat(there .. "/slurm/task_" .. i .. ".out"), "task " .. i .. " wrote its output")
    end
    A.eq(results_without_seconds(there .. "/results.csv"), results_without_seconds(here .. "/results.csv"),
        "results.csv, but for the seconds")
    local trial = sys.json_decode(read(there .. "/trial_003/trial.json"))
    A.eq(trial.status, "ok")
    -- A resubmission: every trial finished, nothing is submitted or rewritten.
    local ckpt = there .. "/trial_002/run/fold4/checkpoint.safetensors"
    local mtime = sys.stat(ckpt).mtime
    code, text = sweep(sweep_args(data, there) .. " --slurm --submit --slurm-wait", cluster.env)
    A.eq(code, 0, text)
    A.truthy(text:find("all 4 trials finished earlier; nothing to submit", 1, true), text)
    A.eq(sys.stat(ckpt).mtime, mtime, "the finished trial was not run again")
    A.eq(results_without_seconds(there .. "/results.csv"), results_without_seconds(here .. "/results.csv"))
end)

return tests
