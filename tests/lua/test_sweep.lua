-- scripts/sweep.lua as a user starts it (a child process) over a tiny
-- synthetic corpus with a narrow network: trial folders, the sorted result
-- table, a rerun that skips finished trials, failed and resumed trials, bad
-- input; and machrt.sweep's random draws directly.

local A = require "assert"
local sys = require "machrt.sys"
local sweep = require "machrt.sweep"

local F = require "files"

local tests, test, tmpdir = F.suite()
local read, exists = F.read, F.exists

-- One corpus for the whole file: 20 clips (16 training, 4 validation).
local corpus
local function tiny_corpus()
    if not corpus then
        corpus = tmpdir{ create = false, keep = true }
        require("machrt.synth").generate(corpus, { clips = 20, seed = 3 })
    end
    return corpus
end

local function tiny_args(data)
    return table.concat({
        "--architecture.width=4", "--training.epochs=1", "--training.batch_size=4",
        "--audio.training_chunk_seconds=2", "--prediction.inference_chunk_seconds=2",
        "--dataset.data_folder=" .. data, "--dataset.train_dataframe=" .. data .. "/dataset.csv",
    }, " ")
end

-- Runs the sweep; returns exit status code and output.
local function run(args, env)
    return F.run(string.format("%s ./machrt scripts/sweep.lua experiments/resnet34.lua %s", env or "", args))
end

local csv_rows = F.csv_rows

local function count(text, s)
    local n, at = 0, 1
    while true do
        local i = text:find(s, at, true)
        if not i then return n end
        n, at = n + 1, i + 1
    end
end

test("a 2x2 grid with --jobs 2: trial folders, sorted results, a rerun skips them all", function()
    local data, out = tiny_corpus(), tmpdir{ create = false }
    local args = "--grid training.learning_rate=1e-3,3e-4 --grid training.batch_size=4,8 --jobs 2 --out "
        .. out .. " " .. tiny_args(data):gsub("%-%-training%.batch_size=4 ", "")
    local code, text = run(args)
    A.eq(code, 0, "exit status; output:\n" .. text)
    -- Trial order: the first grid axis varies slowest.
    local expect = { { "1e-3", "4" }, { "1e-3", "8" }, { "3e-4", "4" }, { "3e-4", "8" } }
    local f1_of, checkpoint = {}, {}
    for i, e in ipairs(expect) do
        local dir = string.format("%s/trial_%03d", out, i)
        local t = sys.json_decode(read(dir .. "/trial.json"))
        A.eq(t.status, "ok", dir)
        A.eq(t.overrides[1].path .. "=" .. t.overrides[1].text, "training.learning_rate=" .. e[1])
        A.eq(t.overrides[2].path .. "=" .. t.overrides[2].text, "training.batch_size=" .. e[2])
        local fold = dir .. "/run/fold4"
        local cfg = sys.json_decode(read(fold .. "/config.json"))
        A.eq(cfg.training.batch_size, tonumber(e[2]), "the trial ran its own batch size")
        A.eq(cfg.training.learning_rate, tonumber(e[1]))
        A.eq(cfg.environment.threads, 1, "threads split between 2 jobs on 2 cores or fewer")
        A.truthy(read(dir .. "/output.log"):find("fold 4 epoch 1", 1, true), "the trial's output is logged")
        f1_of["trial_" .. string.format("%03d", i)] = sys.json_decode(read(fold .. "/metrics.json")).f1
        checkpoint[i] = { bytes = read(fold .. "/checkpoint.safetensors"),
                          mtime = sys.stat(fold .. "/checkpoint.safetensors").mtime }
    end
    local rows = csv_rows(out .. "/results.csv")
    A.eq(table.concat(rows[1], ","),
         "trial,status,training.learning_rate,training.batch_size,f1,accuracy,roc_auc,loss,seconds")
    A.eq(#rows, 5, "header + 4 trials")
    for k = 2, 5 do
        local f1 = f1_of[rows[k][1]]
        A.truthy(math.abs(tonumber(rows[k][5]) - f1) < 1e-5, "f1 of " .. rows[k][1] .. " is its metrics.json's")
        if k > 2 then
            local prev = f1_of[rows[k - 1][1]]
            A.truthy(prev > f1 or prev == f1 and rows[k - 1][1] < rows[k][1],
                     "sorted by f1, best first:\n" .. read(out .. "/results.csv"))
        end
    end
    A.truthy(text:find("best: " .. rows[2][1], 1, true), text)
    A.truthy(text:find("./machrt experiments/resnet34.lua --architecture.width=4", 1, true),
             "the best trial's command line is printed:\n" .. text)
    -- The rerun finds every trial finished and touches none.
    code, text = run(args)
    A.eq(code, 0, "rerun; output:\n" .. text)
    A.eq(count(text, "finished earlier, skipped"), 4, text)
    A.truthy(text:find("4 trials, 0 to run", 1, true), text)
    for i = 1, 4 do
        local path = string.format("%s/trial_%03d/run/fold4/checkpoint.safetensors", out, i)
        A.truthy(read(path) == checkpoint[i].bytes, "checkpoint rewritten: " .. path)
        A.eq(sys.stat(path).mtime, checkpoint[i].mtime, path)
    end
    A.eq(#csv_rows(out .. "/results.csv"), 5)
end)

test("a failed trial is recorded and the sweep goes on; a rerun resumes a killed one", function()
    local data, out = tiny_corpus(), tmpdir{ create = false }
    -- batch size 4: 4 steps per epoch, killed at step 5 (in epoch 2, after the
    -- epoch-1 checkpoint); batch size 64 exceeds the 16 training clips.
    local args = "--grid training.batch_size=4,64 --out " .. out .. " "
        .. tiny_args(data):gsub("%-%-training%.batch_size=4 ", ""):gsub("epochs=1", "epochs=2")
    local code, text = run(args, "MACHRT_KILL_AT_STEP=5")
    A.truthy(code ~= 0, "a sweep with failed trials exits non-zero; output:\n" .. text)
    A.eq(count(text, "FAILED"), 2, text)
    A.truthy(text:find("batch size 64 is larger than the 16 items", 1, true), "the log tail is shown:\n" .. text)
    local rows = csv_rows(out .. "/results.csv")
    A.eq(#rows, 3)
    A.eq(rows[2][2] .. rows[3][2], "failedfailed")
    code, text = run(args)
    A.truthy(code ~= 0, "trial 2 still fails")
    A.truthy(read(out .. "/trial_001/output.log"):find("resuming", 1, true), "trial 1 resumed its checkpoint")
    rows = csv_rows(out .. "/results.csv")
    A.eq(rows[2][1] .. " " .. rows[2][2], "trial_001 ok", "the finished trial first")
    A.eq(rows[3][1] .. " " .. rows[3][2], "trial_002 failed", "failed trials last")
    local log = read(out .. "/trial_001/run/fold4/log.csv")
    A.truthy(log:find("\n2,8,", 1, true), "both epochs in the resumed log:\n" .. log)
end)

test("bad input: unknown key lists the valid ones, empty or inverted ranges; nothing starts", function()
    local data, out = tiny_corpus(), tmpdir{ create = false }
    local base = "--out " .. out .. " " .. tiny_args(data)
    local code, text = run("--grid training.lr=1e-3,3e-4 " .. base)
    A.truthy(code ~= 0)
    A.truthy(text:find("unknown key 'training.lr'", 1, true) and text:find("learning_rate", 1, true)
             and text:find("batch_size", 1, true), text)
    code, text = run("--grid trainin.epochs=1,2 " .. base)
    A.truthy(code ~= 0)
    A.truthy(text:find("no section 'trainin'", 1, true) and text:find("training", 1, true), text)
    code, text = run("--random 2 --range training.learning_rate=1e-3:1e-3 " .. base)
    A.truthy(code ~= 0)
    A.truthy(text:find("range 1e-3..1e-3 is empty", 1, true), text)
    code, text = run("--random 2 --range training.learning_rate=3e-3:1e-4:log " .. base)
    A.truthy(code ~= 0)
    A.truthy(text:find("range 3e-3..1e-4 is empty", 1, true), text)
    code, text = run("--random 2 --range training.learning_rate=low:1e-3 " .. base)
    A.truthy(code ~= 0)
    A.truthy(text:find("lower bound 'low' is not a number", 1, true), text)
    local no_batch = base:gsub("%-%-training%.batch_size=4 ", "")
    code, text = run("--grid training.batch_size=4,many " .. no_batch)
    A.truthy(code ~= 0)
    A.truthy(text:find("trial_002", 1, true) and text:find("expects a number, got 'many'", 1, true), text)
    code, text = run("--grid training.batch_size= " .. no_batch)
    A.truthy(code ~= 0)
    A.truthy(text:find("empty value", 1, true), text)
    A.eq(exists(out), false, "no sweep folder, no trial, no results.csv")
end)

test("a trial with a value the schema refuses fails the sweep before the first trial starts", function()
    local data, out = tiny_corpus(), tmpdir{ create = false }
    local base = "--out " .. out .. " " .. tiny_args(data)
    local code, text = run("--grid training.grad_accumulation=1,0 " .. base)
    A.eq(code, 2, text)
    A.truthy(text:find("trial_002 (training.grad_accumulation=0)", 1, true)
             and text:find("training.grad_accumulation = 0: expects an integer >= 1", 1, true), text)
    A.truthy(not text:find("stack traceback", 1, true), text)
    code, text = run("--random 3 --choice architecture.pool=GeM,max --seed 4 " .. base)
    A.eq(code, 2, text)
    A.truthy(text:find("architecture.pool = 'max': expects one of GeM, Avg", 1, true), text)
    A.eq(exists(out), false, "no sweep folder, no trial started")
end)

test("random draws: the same seed draws the same trials, within the ranges", function()
    local exp = "experiments/resnet34.lua"
    local function draw(seed)
        local opts = sweep.parse_args{ exp, "--random", "6", "--seed", tostring(seed),
            "--range", "training.learning_rate=1e-4:3e-3:log", "--range=training.epochs=1:3:int",
            "--range", "augmentation.mix_probability=0.2:0.8", "--choice", "architecture.pool=GeM,avg" }
        local values = {}
        for _, t in ipairs(sweep.trials(opts)) do
            local parts = {}
            for _, o in ipairs(t.overrides) do parts[#parts + 1] = o.path .. "=" .. o.text end
            values[#values + 1] = table.concat(parts, " ")
            local lr, epochs, p = tonumber(t.overrides[1].text), t.overrides[2].text, tonumber(t.overrides[3].text)
            A.truthy(lr >= 1e-4 and lr <= 3e-3, "log range: " .. lr)
            A.truthy(epochs == "1" or epochs == "2" or epochs == "3", "int range: " .. epochs)
            A.truthy(p >= 0.2 and p <= 0.8, "lin range: " .. p)
            A.truthy(t.overrides[4].text == "GeM" or t.overrides[4].text == "avg")
        end
        return table.concat(values, "\n")
    end
    local a = draw(7)
    A.eq(select(2, a:gsub("\n", "")), 5, "6 trials")
    A.eq(draw(7), a, "same seed, same draws")
    A.truthy(draw(8) ~= a, "another seed draws other trials")
    -- The grid is the cartesian product, first axis slowest.
    local opts = sweep.parse_args{ exp, "--grid", "training.learning_rate=1e-3,3e-4",
                                   "--grid", "training.batch_size=16,32,64" }
    local trials = sweep.trials(opts)
    A.eq(#trials, 6)
    A.eq(trials[2].overrides[1].text .. "," .. trials[2].overrides[2].text, "1e-3,32")
    A.eq(trials[4].overrides[1].text .. "," .. trials[4].overrides[2].text, "3e-4,16")
    -- Every trial shares one environment.seed (the sweep's) unless given.
    A.eq(opts.fixed[#opts.fixed].path .. "=" .. opts.fixed[#opts.fixed].text, "environment.seed=1")
    A.raises(function() sweep.parse_args{ exp, "--grid", "a.b=1", "--random", "2" } end, "not both")
    A.raises(function() sweep.parse_args{ exp, "--grid", "a.b=1", "--output_directory=x" } end, "--out")
end)

return tests
