-- End-to-end runs of experiments/resnet34.lua as a user starts it (a child
-- process), on a tiny synthetic corpus with a narrow network: outputs,
-- kill-and-resume equality, and the bad-input paths of the pipeline.

local A = require "assert"
local mt = require "machrt"
local sys = require "machrt.sys"
local audio = require "machrt.audio"
local run_folder = require "machrt.run_folder"

local F = require "files"
local X = require "tiny_experiment"
local tests, test, make_tmpdir = F.suite()
local read, exists = F.read, F.exists

-- A fresh path (not created: the experiment makes its output folders),
-- removed when the test ends.
local function tmpdir() return make_tmpdir{ create = false } end

-- One corpus for the whole file: 40 clips, 4 types (generated once).
local corpus
local function tiny_corpus()
    corpus = corpus or X.corpus(make_tmpdir{ create = false, keep = true })
    return corpus
end

local common_args, run, fold_dir = X.args, X.run, X.fold_dir
local function weights(path) return (mt.load(path)) end
local assert_same_tensors = X.same_tensors

test("a run writes config, log, checkpoint, predictions and metrics", function()
    local data, out = tiny_corpus(), tmpdir()
    local code, text = run(common_args(data, out))
    A.eq(code, 0, "exit status; output:\n" .. text)
    local dir = fold_dir(out)
    for _, f in ipairs{ "config.json", "log.csv", "checkpoint.safetensors", "val_predictions.csv",
                        "metrics.json" } do
        A.truthy(exists(dir .. "/" .. f), f .. " missing; output:\n" .. text)
    end
    local cfg = sys.json_decode(read(dir .. "/config.json"))
    A.eq(cfg.environment.seed, 11)
    A.eq(cfg.training.epochs, 2)
    local log_lines = {}
    for line in read(dir .. "/log.csv"):gmatch("[^\n]+") do log_lines[#log_lines + 1] = line end
    A.eq(#log_lines, 3, "header + one row per epoch")
    A.truthy(log_lines[1]:find("^epoch,step,lr,train_loss,val_loss,val_f1"), log_lines[1])
    -- 40 clips, validation_size 0.2: 32 training (4 steps of 8), 8 validation.
    A.truthy(log_lines[3]:find("^2,8,"), "epoch 2 ends at step 8: " .. log_lines[3])
    local pred = {}
    for line in read(dir .. "/val_predictions.csv"):gmatch("[^\n]+") do pred[#pred + 1] = line end
    A.eq(#pred, 9, "header + 8 validation clips")
    A.eq(pred[1], ",audio,label,predicted,p_fan,p_pump,p_slider,p_valve")
    local m = sys.json_decode(read(dir .. "/metrics.json"))
    A.eq(m.validation_clips, 8)
    A.eq(#m.classes, 4)
    A.truthy(m.f1 >= 0 and m.f1 <= 1, "f1 in [0, 1]")
    A.truthy(text:find("summary"), "the summary table is printed")
    -- profile.json: every part of the loop timed, the parts and "other"
    -- adding up to the wall time; the table and peak RSS in the log.
    local p = sys.json_decode(read(dir .. "/profile.json"))
    local seconds, sum = {}, 0
    for _, part in ipairs(p.parts) do
        A.truthy(part.seconds >= 0, part.name .. " seconds")
        seconds[part.name], sum = part.seconds, sum + part.seconds
    end
    for _, name in ipairs{ "setup", "data loading", "front end", "forward + backward", "optimizer", "evaluation",
                           "checkpoint and writes", "interpretations", "scorer", "other" } do
        A.truthy(seconds[name], name .. " missing from profile.json")
    end
    A.truthy(seconds["forward + backward"] > 0, "forward + backward took time")
    A.near(sum, p.wall_seconds, 1e-6 * p.wall_seconds + 1e-9)
    A.eq(p.batches, 8, "2 epochs of 4 batches, each with its workers' timing")
    local worker_parts = {}
    for _, part in ipairs(p.background) do worker_parts[#worker_parts + 1] = part.name end
    A.eq(worker_parts, { "crop", "decode" }, "the workers' parts")
    A.truthy(p.peak_rss_bytes > 0, "peak RSS")
    A.truthy(text:find("fold 4 profile: [%d.]+ s wall, peak RSS [%d.]+ GB"), "the profile line; output:\n" .. text)
    A.truthy(text:find("forward %+ backward"), "the profile table")
end)

test("validation shows progress; notices are said once per run, and not by predictions", function()
    local data, out = tiny_corpus(), tmpdir()
    -- Output into a pipe: progress comes as plain lines. The reference audio
    -- settings have all-zero mel filters; mixed precision asked for on the CPU.
    local code, text = run(common_args(data, out) .. " --dataset.folds=0,1 --training.epochs=1 "
                           .. "--training.batch_size=4 --environment.mixed_precision_training=true")
    A.eq(code, 0, text)
    local function count(s) return select(2, text:gsub(s:gsub("%p", "%%%0"), "")) end
    A.eq(count("validation 2/2"), 2, "a validation progress line per fold (8 clips, batches of 4): " .. text)
    A.truthy(not text:find("\r", 1, true), "no carriage return in piped output")
    A.eq(count("mel filters are all zero"), 1, "the mel filter notice, once over two folds: " .. text)
    A.eq(count("bf16 GEMM operands on the CPU") + count("this CPU has no bf16")
         + count("bf16 dot products time at"), 1,
         "the precision notice, once: " .. text)
    local dir = out .. "/final_machinetype_audio_classification/fold0"
    local clips = data .. "/fan/id_00/normal"
    code, text = F.run(string.format("./machrt scripts/predict.lua --run %s --input %s", dir, clips))
    A.eq(code, 0, text)
    A.eq(count("mel filters are all zero"), 0, "predict.lua repeats no training notice: " .. text)
    code, text = F.run(string.format("./machrt %s/scorer/score.lua %s/*.wav", dir, clips))
    A.eq(code, 0, text)
    A.eq(count("mel filters are all zero"), 0, "nor does the scorer: " .. text)
end)

-- The mean and sample standard deviation (n - 1), computed here.
local function mean_std(values)
    local sum = 0
    for _, v in ipairs(values) do sum = sum + v end
    local mean, ss = sum / #values, 0
    for _, v in ipairs(values) do ss = ss + (v - mean) ^ 2 end
    return mean, math.sqrt(ss / (#values - 1))
end

test("a 2-fold run writes the out-of-fold predictions and the cross-fold summary", function()
    local data, out = tiny_corpus(), tmpdir()
    local code, text = run(common_args(data, out) .. " --dataset.folds=0,1 --training.epochs=1")
    A.eq(code, 0, "output:\n" .. text)
    local exp = out .. "/final_machinetype_audio_classification"
    local per_fold = { sys.json_decode(read(exp .. "/fold0/metrics.json")),
                       sys.json_decode(read(exp .. "/fold1/metrics.json")) }
    local summary = sys.json_decode(read(exp .. "/cross_fold.json"))
    A.eq(summary.folds, { 0, 1 })
    A.truthy(summary.std:find("n - 1", 1, true), summary.std)
    for _, key in ipairs{ "f1", "accuracy", "roc_auc", "loss" } do
        local values = { per_fold[1][key], per_fold[2][key] }
        local mean, std = mean_std(values)
        local s = summary.metrics[key]
        A.near(s.values[1], values[1], 1e-12, key .. " fold 0")
        A.near(s.values[2], values[2], 1e-12, key .. " fold 1")
        A.near(s.mean, mean, 1e-12, key .. " mean")
        A.near(s.std, std, 1e-12, key .. " std")
    end
    local f1s = { per_fold[1].per_class[2].f1, per_fold[2].per_class[2].f1 }
    local _, std = mean_std(f1s)
    A.near(summary.per_class.pump.f1.std, std, 1e-12, "per-class F1 std")
    -- The out-of-fold file: both folds' rows, in fold order, with their fold.
    local oof = F.csv_rows(exp .. "/oof_predictions.csv")
    A.eq(oof[1], { "", "audio", "label", "predicted", "p_fan", "p_pump", "p_slider", "p_valve", "fold" })
    local expect = {}
    for k, fold in ipairs{ 0, 1 } do
        local rows = F.csv_rows(string.format("%s/fold%d/val_predictions.csv", exp, fold))
        for r = 2, #rows do
            rows[r][#rows[r] + 1] = tostring(fold)
            expect[#expect + 1] = rows[r]
        end
        A.eq(#rows - 1, per_fold[k].validation_clips)
    end
    A.eq(#oof - 1, 16, "8 validation clips per fold")
    for r = 2, #oof do A.eq(oof[r], expect[r - 1], "oof row " .. (r - 1)) end
    -- Each clip of the corpus is validated once over folds 0 and 1 of 5.
    local seen = {}
    for r = 2, #oof do
        A.truthy(not seen[oof[r][1]], "index " .. oof[r][1] .. " appears once")
        seen[oof[r][1]] = true
    end
    -- The pooled scores are the metrics of the out-of-fold rows.
    local classes = per_fold[1].classes
    local class_of = {}
    for c, name in ipairs(classes) do class_of[name] = c end
    local probs, truth = {}, {}
    for r = 2, #oof do
        truth[r - 1] = class_of[oof[r][3]]
        probs[r - 1] = { tonumber(oof[r][5]), tonumber(oof[r][6]), tonumber(oof[r][7]), tonumber(oof[r][8]) }
    end
    local m = require("machrt.metrics").classification(probs, truth, classes)
    A.eq(summary.out_of_fold.clips, 16)
    A.near(summary.out_of_fold.f1, m.f1, 1e-12, "pooled F1")
    A.near(summary.out_of_fold.accuracy, m.accuracy, 1e-12, "pooled accuracy")
    A.truthy(text:find("cross-fold summary over folds 0, 1", 1, true), text)
    -- A fold finished by --resume completes the summary as well.
    local oof_text = read(exp .. "/oof_predictions.csv")
    os.remove(exp .. "/cross_fold.json")
    os.remove(exp .. "/oof_predictions.csv")
    code, text = run("--resume " .. exp .. "/fold1")
    A.eq(code, 0, "resumed; output:\n" .. text)
    A.eq(read(exp .. "/oof_predictions.csv"), oof_text)
    A.near(sys.json_decode(read(exp .. "/cross_fold.json")).metrics.f1.std, summary.metrics.f1.std, 1e-12)
    -- One fold: no summary.
    local single = tmpdir()
    code, text = run(common_args(data, single) .. " --training.epochs=1 --training.run_interpretations=false")
    A.eq(code, 0, text)
    A.truthy(not exists(single .. "/final_machinetype_audio_classification/cross_fold.json"))
end)

test("val_predictions.csv carries the CSV's own index: it joins back onto the CSV", function()
    local data, out = tiny_corpus(), tmpdir()
    sys.mkdir(out)
    -- The corpus' rows in reverse order, each with an index 1000 + 7 x its
    -- position: neither 0..n-1 nor the order of the file.
    local lines = {}
    for line in read(data .. "/dataset.csv"):gmatch("[^\n]+") do lines[#lines + 1] = line end
    local shuffled, by_index = { lines[1] }, {}
    for r = #lines, 2, -1 do
        local index = tostring(1000 + 7 * (r - 2))
        local line = lines[r]:gsub("^[^,]*", index, 1)
        shuffled[#shuffled + 1] = line
        local cells = {}
        for cell in (line .. ","):gmatch("([^,]*),") do cells[#cells + 1] = cell end
        by_index[index] = cells
    end
    local path = out .. "/shuffled.csv"
    sys.write_file(path, table.concat(shuffled, "\n") .. "\n")
    local code, text = run(common_args(data, out) .. " --dataset.train_dataframe=" .. path
                           .. " --training.epochs=1 --training.run_interpretations=false")
    A.eq(code, 0, "output:\n" .. text)
    local pred = F.csv_rows(fold_dir(out) .. "/val_predictions.csv")
    A.eq(pred[1][1], "", "the index column is unnamed, as in the CSV")
    A.eq(#pred - 1, 8)
    for r = 2, #pred do
        local row = by_index[pred[r][1]]
        A.truthy(row, "index " .. pred[r][1] .. " is one of the CSV's")
        A.eq({ pred[r][2], pred[r][3] }, { row[2], row[3] }, "audio and label of index " .. pred[r][1])
    end
end)

test("save_best_checkpoint keeps the best epoch's weights by prediction.metric", function()
    local data, out = tiny_corpus(), tmpdir()
    local args = common_args(data, out):gsub("training.epochs=2", "training.epochs=3")
    local code, text = run(args .. " --training.save_best_checkpoint=true --prediction.metric=LogLoss")
    A.eq(code, 0, "output:\n" .. text)
    local dir = fold_dir(out)
    A.truthy(exists(dir .. "/best.safetensors"), "best.safetensors written")
    -- The best epoch is the one with the lowest validation loss in log.csv.
    local best_epoch, best_loss = nil, math.huge
    for line in read(dir .. "/log.csv"):gmatch("[^\n]+") do
        local e, vl = line:match("^(%d+),[^,]*,[^,]*,[^,]*,([^,]*),")
        if e and tonumber(vl) < best_loss then best_epoch, best_loss = tonumber(e), tonumber(vl) end
    end
    local _, meta = mt.load(dir .. "/checkpoint.safetensors")
    local run_state = sys.json_decode(meta["machrt.run"])
    A.eq(run_state.best.epoch, best_epoch)
    A.truthy(text:find("best LogLoss", 1, true), text)
    code, text = run(common_args(data, tmpdir()) .. " --prediction.metric=Bogus")
    A.truthy(code ~= 0 and text:find("prediction.metric = 'Bogus': expects one of F1, Accuracy, AUC, LogLoss", 1, true), text)
end)

test("several label columns train a multi-label model", function()
    local data, out = tiny_corpus(), tmpdir()
    sys.mkdir(out)
    -- One 0/1 column per machine type, from the label column.
    local lines, classes = {}, { "fan", "pump", "slider", "valve" }
    for line in read(data .. "/dataset.csv"):gmatch("[^\n]+") do
        if #lines == 0 then
            lines[1] = line .. ",is_fan,is_pump,is_slider,is_valve"
        else
            local label = line:match("^[^,]*,[^,]*,([^,]*),")
            local cells = {}
            for i, c in ipairs(classes) do cells[i] = c == label and "1" or "0" end
            lines[#lines + 1] = line .. "," .. table.concat(cells, ",")
        end
    end
    local csv = out .. "/multi.csv"
    sys.write_file(csv, table.concat(lines, "\n") .. "\n")
    local code, text = run(common_args(data, out) .. " --dataset.train_dataframe=" .. csv
        .. " --dataset.label_columns=is_fan,is_pump,is_slider,is_valve --training.epochs=1")
    A.eq(code, 0, "output:\n" .. text)
    local m = sys.json_decode(read(fold_dir(out) .. "/metrics.json"))
    A.eq(m.classes, { "is_fan", "is_pump", "is_slider", "is_valve" })
    A.truthy(m.f1 >= 0 and m.f1 <= 1)
end)

test("the disk wave cache is cleared of the temporary files of writers that are gone when a run opens it", function()
    local data, out, cache = tiny_corpus(), tmpdir(), make_tmpdir()
    local dead = math.tointeger(tonumber(select(2, F.run("sh -c 'echo $$'"))))
    local stale = { cache .. "/0123456789abcdef.safetensors.tmp." .. dead .. ".0",
                    cache .. "/fedcba9876543210.safetensors.tmp." .. dead }
    local live = cache .. "/00000000000000aa.safetensors.tmp.1.0" -- PID 1 is always there
    for _, p in ipairs(stale) do sys.write_file(p, "torn") end
    sys.write_file(live, "a live writer's")
    local code, text = run(common_args(data, out) .. " --training.epochs=1 --dataset.cache=disk "
                           .. "--dataset.cache_folder=" .. cache)
    A.eq(code, 0, "output:\n" .. text)
    for _, p in ipairs(stale) do A.eq(exists(p), false, p .. " removed") end
    A.truthy(exists(live), "a live process's temporary file stays")
    A.truthy(text:find("removed 2 temporary file(s) left by processes that are gone", 1, true), text)
end)

test("a killed run resumes to the same weights, bit for bit", function()
    local data = tiny_corpus()
    local a, b = tmpdir(), tmpdir()
    local args = common_args(data, a):gsub("training.epochs=2", "training.epochs=3")
    local code, text = run(args)
    A.eq(code, 0, "uninterrupted run; output:\n" .. text)
    -- SIGKILL right after step 6 (in epoch 2; the epoch-1 checkpoint is on disk).
    local args_b = common_args(data, b):gsub("training.epochs=2", "training.epochs=3")
    code, text = run(args_b, "MACHRT_KILL_AT_STEP=6")
    A.truthy(code ~= 0, "the killed run must not exit cleanly")
    local state = mt.load(fold_dir(b) .. "/checkpoint.safetensors")
    A.truthy(state["fc.weight"], "a checkpoint survives the kill")
    code, text = run("--resume " .. fold_dir(b) .. " --environment.number_of_workers=3")
    A.eq(code, 0, "resumed run; output:\n" .. text)
    A.truthy(text:find("resuming"), "the resumed run says so")
    local n = assert_same_tensors(weights(fold_dir(a) .. "/checkpoint.safetensors"),
                                  weights(fold_dir(b) .. "/checkpoint.safetensors"))
    A.truthy(n > 100, "model and optimizer tensors compared: " .. n)
    -- The log is rebuilt from the checkpoint: the same losses per epoch.
    local function losses(dir)
        local l = {}
        for line in read(dir .. "/log.csv"):gmatch("[^\n]+") do
            local e, s, lr, tl, vl, f1 = line:match("^([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)")
            l[#l + 1] = table.concat({ e, s, lr, tl, vl, f1 }, ",")
        end
        return table.concat(l, "\n")
    end
    A.eq(losses(fold_dir(b)), losses(fold_dir(a)))
end)

-- A finished 2-epoch run, made once for the file; each test works on a copy
-- (output_directory) of it.
local finished
local function copy_of_finished_run()
    if not finished then
        finished = make_tmpdir{ create = false, keep = true }
        local code, text = run(common_args(tiny_corpus(), finished))
        A.eq(code, 0, "the shared run; output:\n" .. text)
    end
    local out = tmpdir()
    os.execute(string.format("cp -r '%s' '%s'", finished, out))
    return out
end

-- The bytes of every file in a folder (and below), by relative name.
local function snapshot(dir)
    local files = {}
    local function walk(rel)
        for _, name in ipairs(sys.list_folder(dir .. rel)) do
            local path = rel .. "/" .. name
            if sys.stat(dir .. path).is_dir then walk(path) else files[path] = read(dir .. path) end
        end
    end
    walk("")
    files["/run.lock"] = nil -- holds the PID of the last run that locked the folder
    return files
end

test("a second run into a folder that holds a run is refused, naming --resume and --overwrite", function()
    local out = copy_of_finished_run()
    local dir = fold_dir(out)
    local before = snapshot(dir)
    local code, text = run(common_args(tiny_corpus(), out) .. " --training.learning_rate=0.5")
    A.truthy(code ~= 0, "refused; output:\n" .. text)
    A.truthy(text:find("run folder " .. dir .. " already holds a run", 1, true)
             and text:find("--resume " .. dir, 1, true) and text:find("--overwrite", 1, true), text)
    A.eq(text:find("resuming", 1, true), nil, text)
    A.eq(snapshot(dir), before, "the run folder is unchanged")
end)

test("--resume refuses a changed setting, naming the key", function()
    local out = copy_of_finished_run()
    local dir = fold_dir(out)
    local before = snapshot(dir)
    local code, text = run("--resume " .. dir .. " --training.learning_rate=0.5")
    A.truthy(code ~= 0)
    A.truthy(text:find("--training.learning_rate=0.5 changes training.learning_rate (0.001 in "
                       .. dir .. "/config.json)", 1, true), text)
    A.eq(snapshot(dir), before, "the run folder is unchanged")
    -- The stored value given again is no change (the finished run has nothing to train).
    code, text = run("--resume " .. dir .. " --training.learning_rate=0.001")
    A.eq(code, 0, "output:\n" .. text)
    A.truthy(text:find("resuming " .. dir .. " after epoch 2 of 2", 1, true), text)
    -- A folder that does not exist is named.
    code, text = run("--resume " .. out .. "/nothing")
    A.truthy(code ~= 0 and text:find("--resume " .. out .. "/nothing: no such run folder", 1, true), text)
end)

-- What a run written before machrt had a setting leaves: config.json and
-- the checkpoint's settings without it, the checkpoint sealed as that
-- version sealed it (run_folder.seal), so that its checksum holds.
local function predate_setting(dir, section, key)
    local path = dir .. "/config.json"
    local cfg = sys.json_decode(read(path))
    cfg[section][key] = nil
    sys.write_file(path, sys.json_encode(cfg, { indent = true }) .. "\n")
    local ckpt = dir .. "/checkpoint.safetensors"
    local tensors, meta = mt.load(ckpt)
    local trained = sys.json_decode(meta["machrt.config"])
    A.truthy(trained[section][key] ~= nil, "the checkpoint records " .. section .. "." .. key)
    trained[section][key] = nil
    meta["machrt.config"] = sys.json_encode(trained, { indent = true }) .. "\n"
    run_folder.seal(tensors, meta)
    mt.save(ckpt, tensors, meta)
end

test("--resume of a run that predates a setting takes the value that run had, saying so, or refuses", function()
    local out = copy_of_finished_run()
    local dir = fold_dir(out)
    predate_setting(dir, "audio", "resampler")
    local code, text = run("--resume " .. dir .. " --training.epochs=3")
    A.eq(code, 0, "output:\n" .. text)
    A.truthy(text:find(dir .. "/config.json has no audio.resampler (the run predates the setting): "
                       .. "resuming with audio.resampler = 'soxr', what machrt did before it existed", 1, true), text)
    A.truthy(text:find("resuming " .. dir .. " after epoch 2 of 3 (step 8)", 1, true), text)
    local rows = F.csv_rows(dir .. "/log.csv")
    A.eq(#rows, 4, "header + 3 epochs: training went on")
    A.eq(rows[4][2], "12", "epoch 3 ends at step 12")
    -- From now on the run records the value: the next resume has nothing to fill.
    A.eq(sys.json_decode(read(dir .. "/config.json")).audio.resampler, "soxr")
    local _, meta = mt.load(dir .. "/checkpoint.safetensors")
    A.eq(sys.json_decode(meta["machrt.config"]).audio.resampler, "soxr")
    code, text = run("--resume " .. dir)
    A.eq(code, 0, "output:\n" .. text)
    A.eq(text:find("predates", 1, true), nil, text)
    -- A setting with no known earlier value is refused by name, the folder left as it was.
    out = copy_of_finished_run()
    dir = fold_dir(out)
    predate_setting(dir, "audio", "hop_size")
    local before = snapshot(dir)
    code, text = run("--resume " .. dir)
    A.eq(code, 2, "a user's error; output:\n" .. text)
    A.truthy(text:find(dir .. "/config.json has no setting audio.hop_size: the run was written before "
                       .. "machrt had it, and no value is known to reproduce what it did", 1, true), text)
    A.eq(snapshot(dir), before, "the run folder is unchanged")
end)

test("--resume checks the stored config with the command line over it, not the defaults with it", function()
    local out = copy_of_finished_run()
    local dir = fold_dir(out)
    -- The stored data_folder given again is no change; over the defaults
    -- (train_dataframe '') it would break the rule that the two come together.
    local code, text = run("--resume " .. dir .. " --dataset.data_folder=" .. tiny_corpus())
    A.eq(code, 0, "output:\n" .. text)
    A.truthy(text:find("resuming " .. dir .. " after epoch 2 of 2", 1, true), text)
    -- The merged config is still checked: a stored rule broken by the command line is named.
    code, text = run("--resume " .. dir .. " --environment.threads=-1")
    A.eq(code, 2, "output:\n" .. text)
    A.truthy(text:find("environment.threads", 1, true), text)
end)

test("--resume --training.epochs=N+2 extends a finished run, saying how the schedule goes on", function()
    local out = copy_of_finished_run()
    local dir = fold_dir(out)
    -- What a killed writer leaves: temporary files named after a PID that is gone.
    local dead = math.tointeger(tonumber(select(2, F.run("sh -c 'echo $$'"))))
    local stale = { dir .. "/checkpoint.safetensors.tmp." .. dead, dir .. "/scorer/model.safetensors.tmp." .. dead }
    for _, p in ipairs(stale) do sys.write_file(p, "torn") end
    local code, text = run("--resume " .. dir .. " --training.epochs=4 --training.batch_size=8")
    A.eq(code, 0, "output:\n" .. text)
    for _, p in ipairs(stale) do A.eq(exists(p), false, p .. " removed on resume") end
    A.truthy(text:find("removed 2 temporary file(s) left by processes that are gone", 1, true), text)
    A.truthy(text:find("resuming " .. dir .. " after epoch 2 of 4 (step 8)", 1, true), text)
    A.truthy(text:find("training.epochs 2 -> 4", 1, true)
             and text:find("the cosine schedule is recomputed over 4 epochs", 1, true), text)
    local rows = F.csv_rows(dir .. "/log.csv")
    A.eq(#rows, 5, "header + 4 epochs")
    A.eq(rows[5][1], "4")
    A.eq(rows[5][2], "16", "epoch 4 ends at step 16")
    -- Step 9's rate is the 4-epoch cosine's at step 9: 0.5 (1 + cos(pi * 8 / 16)) * 0.001.
    local lr3 = tonumber(rows[4][3])
    A.truthy(lr3 < 0.0005 and lr3 > 0, "epoch 3 ends below the rate it started at: " .. rows[4][3])
    A.eq(sys.json_decode(read(dir .. "/config.json")).training.epochs, 4)
end)

test("--overwrite keeps the old run until the new one writes its first checkpoint", function()
    local out = copy_of_finished_run()
    local dir = fold_dir(out)
    local before = snapshot(dir)
    sys.write_file(dir .. "/old_notes.txt", "from the old run")
    before["/old_notes.txt"] = "from the old run"
    -- Killed in epoch 1 (step 2), before its first checkpoint: the old run is whole.
    local args = common_args(tiny_corpus(), out) .. " --overwrite --training.learning_rate=0.002"
    local code, text = run(args, "MACHRT_KILL_AT_STEP=2")
    A.truthy(code ~= 0, "killed; output:\n" .. text)
    A.truthy(text:find("--overwrite: the old run in " .. dir .. " is removed when this run writes its "
                       .. "first checkpoint", 1, true), text)
    A.eq(snapshot(dir), before, "the old files are all there, unchanged")
    -- Run through: the old files are gone, the new run's are there.
    code, text = run(args)
    A.eq(code, 0, "output:\n" .. text)
    A.truthy(text:find("--overwrite: removed the old run's files from " .. dir, 1, true), text)
    A.eq(exists(dir .. "/old_notes.txt"), false, "an old file is removed")
    A.eq(sys.json_decode(read(dir .. "/config.json")).training.learning_rate, 0.002)
    A.eq(#F.csv_rows(dir .. "/log.csv"), 3)
end)

test("a NaN loss stops with the step and keeps the last good checkpoint", function()
    local data = tmpdir()
    require("machrt.synth").generate(data, { clips = 20, seed = 2 })
    local out = tmpdir()
    local args = common_args(data, out):gsub("batch_size=8", "batch_size=4")
    -- 16 training clips, 4 steps per epoch: killed in epoch 2, after the
    -- epoch-1 checkpoint.
    local code, text = run(args, "MACHRT_KILL_AT_STEP=5")
    A.truthy(code ~= 0, "killed")
    local dir = fold_dir(out)
    -- The classifier's weights of the epoch-1 checkpoint become NaN, so the
    -- next step's loss is NaN. (Audio cannot carry the NaN in: a file with
    -- non-finite or overflowing samples is refused when it is decoded.)
    local path = dir .. "/checkpoint.safetensors"
    local tensors, meta = mt.load(path)
    tensors["fc.weight"]:fill(0 / 0)
    mt.save(path, tensors, require("machrt.run_folder").seal(tensors, meta)) -- a valid checksum
    local before = read(path)
    code, text = run("--resume " .. dir)
    A.truthy(code ~= 0, "a NaN loss must fail the run; output:\n" .. text)
    A.truthy(text:find("training loss is %-?nan at epoch 2, step 5") or text:find("loss is nan"), text)
    A.eq(read(dir .. "/checkpoint.safetensors") == before, true, "checkpoint unchanged")
end)

test("bad input: missing column, missing file, fold, batch size, unknown key", function()
    local data = tiny_corpus()
    local out = tmpdir()
    sys.mkdir(out)
    local base = common_args(data, out)
    -- A CSV without the audio column names it and lists the columns present.
    local csv = out .. "/no_audio.csv"
    sys.write_file(csv, (read(data .. "/dataset.csv"):gsub("^,audio,", ",path,", 1)))
    local code, text = run(base .. " --dataset.train_dataframe=" .. csv)
    A.truthy(code ~= 0)
    A.truthy(text:find("column 'audio' not found", 1, true) and text:find("columns present", 1, true), text)
    -- A row whose file is missing: the default policy fails naming row and file.
    local lines = {}
    for line in read(data .. "/dataset.csv"):gmatch("[^\n]+") do lines[#lines + 1] = line end
    lines[3] = lines[3]:gsub("%d+%.wav", "99999999.wav")
    local missing_row = lines[3]:match("^(%d+),")
    local bad = out .. "/missing.csv"
    sys.write_file(bad, table.concat(lines, "\n") .. "\n")
    -- (Each run in a folder of its own: a failed run leaves its config.json,
    -- and a folder holding one is refused to the next run.)
    code, text = run(base .. " --dataset.train_dataframe=" .. bad .. " --training.epochs=1 --experiment_name=fail")
    A.truthy(code ~= 0, "fail policy")
    A.truthy(text:find("99999999.wav", 1, true) and text:find("row 2", 1, true), text)
    A.truthy(missing_row == "1", "the CSV's second data row is row 2")
    -- ... and the skip policy reports it and goes on.
    code, text = run(base .. " --dataset.train_dataframe=" .. bad .. " --training.epochs=1 "
                     .. "--dataset.on_error=skip --experiment_name=skip")
    A.eq(code, 0, "skip policy; output:\n" .. text)
    A.truthy(text:find("skipped row 2", 1, true), text)
    -- A fold that does not exist.
    code, text = run(base .. " --dataset.folds=7")
    A.truthy(code ~= 0)
    A.truthy(text:find("fold 7 does not exist; folds present: 0, 1, 2, 3, 4", 1, true), text)
    -- A batch larger than the training set.
    code, text = run(base .. " --training.batch_size=64")
    A.truthy(code ~= 0)
    A.truthy(text:find("batch size 64 is larger than the 32 items", 1, true), text)
    -- environment.device: an unknown name, and cuda where no device is usable.
    code, text = run(base .. " --environment.device=tpu")
    A.truthy(code ~= 0)
    A.truthy(text:find("environment.device = 'tpu': expects one of auto, cpu, cuda", 1, true), text)
    if not mt.cuda_available() then
        code, text = run(base .. " --environment.device=cuda")
        A.truthy(code ~= 0)
        A.truthy(text:find("no CUDA device is usable", 1, true), text)
    end
    -- An unknown key lists the valid ones.
    code, text = run(base .. " --training.epoch=3")
    A.truthy(code ~= 0)
    A.truthy(text:find("unknown key 'epoch' in section 'training'", 1, true)
             and text:find("epochs", 1, true), text)
end)

test("a CSV with no data rows, or a single class, is refused naming the file", function()
    local data = tiny_corpus()
    local out = tmpdir()
    sys.mkdir(out)
    local base = common_args(data, out)
    local header = out .. "/header.csv"
    sys.write_file(header, read(data .. "/dataset.csv"):match("^[^\n]*\n"))
    local code, text = run(base .. " --dataset.train_dataframe=" .. header)
    A.truthy(code ~= 0)
    A.truthy(text:find("dataset.train_dataframe " .. header .. " has no data rows (only a header)", 1, true), text)
    code, text = run(base .. " --dataset.validation_strategy=custom --dataset.validation_dataframe=" .. header)
    A.truthy(code ~= 0)
    A.truthy(text:find("dataset.validation_dataframe " .. header .. " has no data rows", 1, true), text)
    -- Only the fan rows: one class.
    local lines = {}
    for line in read(data .. "/dataset.csv"):gmatch("[^\n]+") do
        if #lines == 0 or line:find(",fan,", 1, true) then lines[#lines + 1] = line end
    end
    local fans = out .. "/fans.csv"
    sys.write_file(fans, table.concat(lines, "\n") .. "\n")
    code, text = run(base .. " --dataset.train_dataframe=" .. fans)
    A.truthy(code ~= 0, "a single class must not train")
    A.truthy(text:find(fans .. ": label column 'label' holds a single class ('fan') in its "
                       .. (#lines - 1) .. " rows: a classifier needs at least two classes", 1, true), text)
end)

test("a float file with NaN samples is unreadable in training and validation, named", function()
    local data = tiny_corpus()
    local out = tmpdir()
    sys.mkdir(out)
    local base = common_args(data, out) .. " --training.epochs=1"
    local nan = out .. "/nan.wav"
    F.write_float_wav(nan, 16000, 160000, function(i) return i == 70000 and 0 / 0 or 0.01 end)
    -- Row k of the CSV (1-based data rows) read from nan.wav: row 5 is in
    -- fold 4's validation set (row i goes to fold (i - 1) mod 5), row 2 in training.
    local function csv_with_nan_at(row)
        local lines = {}
        for line in read(data .. "/dataset.csv"):gmatch("[^\n]+") do lines[#lines + 1] = line end
        lines[row + 1] = lines[row + 1]:gsub("^(%d+),[^,]+,", "%1," .. nan .. ",")
        local path = string.format("%s/nan_at_%d.csv", out, row)
        sys.write_file(path, table.concat(lines, "\n") .. "\n")
        return path
    end
    for _, row in ipairs{ 5, 2 } do
        local csv = csv_with_nan_at(row)
        local code, text = run(base .. " --dataset.train_dataframe=" .. csv .. " --experiment_name=fail" .. row)
        A.truthy(code ~= 0, "fail policy, row " .. row)
        A.truthy(text:find("row " .. row .. " (" .. nan .. "): audio.load: " .. nan
                           .. " is corrupt: sample NaN at frame 70000", 1, true), text)
        A.eq(text:find("probs", 1, true), nil, text)
        code, text = run(base .. " --dataset.train_dataframe=" .. csv .. " --dataset.on_error=skip"
                         .. " --experiment_name=skip" .. row)
        A.eq(code, 0, "skip policy, row " .. row .. "; output:\n" .. text)
        A.truthy(text:find((row == 5 and "validation: skipped row " or "skipped row ") .. row
                           .. " (" .. nan .. "): audio.load: " .. nan .. " is corrupt", 1, true), text)
    end
end)

test("real 8-channel MIMII files run end to end (channel pick, resample)", function()
    local sample = os.getenv("MACHRT_SAMPLE_DATA")
    if not sample or not exists(sample .. "/sample.csv") then
        A.skip("MACHRT_SAMPLE_DATA does not name the MIMII sample folder")
    end
    local out = tmpdir()
    local code, text = run(table.concat({
        "--dataset.data_folder=" .. sample, "--dataset.train_dataframe=" .. sample .. "/sample.csv",
        "--architecture.width=4", "--training.batch_size=2", "--training.epochs=1",
        "--environment.number_of_workers=2", "--environment.seed=1", "--output_directory=" .. out,
    }, " "))
    A.eq(code, 0, "output:\n" .. text)
    local pred = read(fold_dir(out) .. "/val_predictions.csv")
    A.truthy(select(2, pred:gsub("\n", "")) >= 2, "header and at least one clip")
end)

return tests
