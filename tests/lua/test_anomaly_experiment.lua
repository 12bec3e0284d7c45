-- End-to-end runs of experiments/anomaly.lua as a user starts it (a child
-- process) on a tiny synthetic corpus (2 machine types x 2 model ids):
-- outputs of both detectors, kill-and-resume equality, and the bad inputs
-- (no normal clip, a machine with one normal clip, no abnormal validation
-- clip, CSVs without model_id or condition).

local A = require "assert"
local mt = require "machrt"
local sys = require "machrt.sys"

local F = require "files"
local tests, test, make_tmpdir = F.suite()
local read, exists = F.read, F.exists

local function tmpdir() return make_tmpdir{ create = false } end

local corpus
local function tiny_corpus()
    if not corpus then
        corpus = make_tmpdir{ create = false, keep = true }
        require("machrt.synth").generate(corpus, { clips = 48, seed = 5, types = { "fan", "pump" },
                                                   ids = { 0, 2 }, abnormal_fraction = 0.3 })
    end
    return corpus
end

local function common_args(data, out, csv)
    return table.concat({
        "--dataset.data_folder=" .. data, "--dataset.train_dataframe=" .. (csv or data .. "/dataset.csv"),
        "--architecture.backbone=resnet18", "--architecture.width=4", "--training.batch_size=8",
        "--training.epochs=2", "--environment.number_of_workers=2", "--environment.seed=11",
        "--environment.threads=1", "--output_directory=" .. out,
    }, " ")
end

local function run(args, env)
    return F.run(string.format("%s ./machrt experiments/anomaly.lua %s", env or "", args))
end

local function fold_dir(out) return out .. "/anomaly_detection/fold4" end

-- A copy of the corpus CSV keeping the rows keep(cells) accepts (cells:
-- index, audio, label, model_id, condition, snr_db); drop names columns to leave out.
local function csv_variant(data, keep, drop)
    local rows = F.csv_rows(data .. "/dataset.csv")
    local header, out = rows[1], {}
    local keep_col = {}
    for c, name in ipairs(header) do keep_col[c] = not (drop and drop[name]) end
    local function line(r)
        local cells = {}
        for c = 1, #header do if keep_col[c] then cells[#cells + 1] = r[c] end end
        return table.concat(cells, ",")
    end
    out[1] = line(header)
    for i = 2, #rows do if keep(rows[i]) then out[#out + 1] = line(rows[i]) end end
    local path = make_tmpdir{ create = false } .. ".csv"
    sys.write_file(path, table.concat(out, "\n") .. "\n")
    return path
end

test("an embedding run writes val_scores.csv, metrics.json with AUC and pAUC, and thresholds", function()
    local data, out = tiny_corpus(), tmpdir()
    local code, text = run(common_args(data, out))
    A.eq(code, 0, "exit status; output:\n" .. text)
    local dir = fold_dir(out)
    A.truthy(text:find("abnormal clips left out", 1, true), "the left-out abnormal clips are counted")
    for _, f in ipairs{ "config.json", "log.csv", "checkpoint.safetensors", "val_scores.csv", "metrics.json" } do
        A.truthy(exists(dir .. "/" .. f), f .. " missing; output:\n" .. text)
    end
    local rows = F.csv_rows(dir .. "/val_scores.csv")
    A.eq(table.concat(rows[1], ","), "audio,label,model_id,condition,anomaly_score,is_anomaly")
    A.truthy(#rows > 2, "validation clips scored")
    for i = 2, #rows do
        A.truthy(tonumber(rows[i][5]), "anomaly_score is a number: " .. rows[i][5])
        A.truthy(rows[i][6] == "true" or rows[i][6] == "false", "is_anomaly is a boolean")
        A.truthy(rows[i][4] == "normal" or rows[i][4] == "abnormal")
    end
    local m = sys.json_decode(read(dir .. "/metrics.json"))
    A.eq(m.method, "embedding")
    A.eq(m.score, "mixture_ensemble")
    A.eq(#m.evaluation.machines, 4)
    for _, name in ipairs{ "mixture_ensemble", "ensemble", "mahalanobis", "frames", "deltas", "mixture", "cosine",
                           "nll" } do
        A.truthy(m.alternatives[name], name)
    end
    for _, machine in ipairs(m.evaluation.machines) do
        local r = m.evaluation.per_machine[machine]
        A.truthy(r.auc or r.undefined, machine .. ": an AUC or the reason it has none")
        if r.auc then A.truthy(r.pauc >= 0 and r.pauc <= 1 and r.pauc_mcclish >= 0, machine .. " pauc") end
        A.truthy(type(m.thresholds[machine]) == "number", machine .. " threshold")
        A.truthy(m.best_score_per_machine[machine] or r.undefined, machine .. ": the winning score")
    end
    A.truthy(m.evaluation.per_type.fan and m.evaluation.per_type.pump, "per machine type")
    -- The thresholds' rates, recounted from val_scores.csv.
    local count = { normal = 0, abnormal = 0, normal_flagged = 0, abnormal_flagged = 0 }
    for i = 2, #rows do
        local c = rows[i][4]
        count[c] = count[c] + 1
        if rows[i][6] == "true" then count[c .. "_flagged"] = count[c .. "_flagged"] + 1 end
    end
    A.eq(m.decisions.all.normal, count.normal)
    A.eq(m.decisions.all.false_positives, count.normal_flagged)
    A.eq(m.decisions.all.detected, count.abnormal_flagged)
    A.truthy(m.decisions.thresholds_from:find("without it", 1, true), m.decisions.thresholds_from)
    A.truthy(text:find(string.format("flag %d of %d", count.normal_flagged, count.normal), 1, true),
             "the log says how many normal clips the thresholds flag")
    A.truthy(read(dir .. "/index.html"):find("interpretations/roc.png", 1, true), "index.html shows the ROC curves")
    for _, f in ipairs{ "roc.png", "histograms.png", "normal_most_anomalous_1.png", "abnormal_least_anomalous_1.png" } do
        A.truthy(exists(dir .. "/interpretations/" .. f), f .. " missing")
    end
    A.truthy(exists(dir .. "/scorer/score.lua") and exists(dir .. "/detector.json"), "scorer and detector.json")
end)

test("the validation fold keeps each machine's normal and abnormal clips (folds stratified)", function()
    local data, out = tiny_corpus(), tmpdir()
    -- Two folds: every machine has at least 2 abnormal clips, so each fold gets one.
    local code, text = run(common_args(data, out) .. " --dataset.validation_size=0.5 --dataset.folds=1")
    A.eq(code, 0, "output:\n" .. text)
    local m = sys.json_decode(read(out .. "/anomaly_detection/fold1/metrics.json"))
    A.eq(#m.evaluation.machines, 4)
    for _, machine in ipairs(m.evaluation.machines) do
        local r = m.evaluation.per_machine[machine]
        A.truthy(r.normal > 0 and r.abnormal > 0, machine .. ": " .. r.normal .. " normal, " .. r.abnormal .. " abnormal")
        A.truthy(r.auc, machine .. " has an AUC")
    end
end)

test("the autoencoder detector trains one model per machine type and scores every clip", function()
    local data, out = tiny_corpus(), tmpdir()
    local code, text = run(common_args(data, out) .. " --anomaly.method=autoencoder --autoencoder.epochs=1"
                           .. " --autoencoder.hidden=16")
    A.eq(code, 0, "exit status; output:\n" .. text)
    local dir = fold_dir(out)
    A.truthy(exists(dir .. "/autoencoder_fan/checkpoint.safetensors"), "fan model")
    A.truthy(exists(dir .. "/autoencoder_pump/checkpoint.safetensors"), "pump model")
    local m = sys.json_decode(read(dir .. "/metrics.json"))
    A.eq(m.method, "autoencoder")
    A.eq(m.score, "reconstruction")
    A.truthy(m.decisions.thresholds_from:find("in-sample", 1, true), "the autoencoder's thresholds are said to be in-sample")
    A.truthy(text:find("reconstruction errors (in-sample)", 1, true), "and the log says so")
    local rows = F.csv_rows(dir .. "/val_scores.csv")
    for i = 2, #rows do A.truthy(tonumber(rows[i][5]) > 0, "a reconstruction error") end
end)

test("an autoencoder run's folder is refused without --overwrite; --overwrite replaces its models", function()
    local data, out = tiny_corpus(), tmpdir()
    local args = common_args(data, out) .. " --anomaly.method=autoencoder --autoencoder.epochs=1 --autoencoder.hidden=16"
    local code, text = run(args)
    A.eq(code, 0, "first run; output:\n" .. text)
    local dir = fold_dir(out)
    sys.write_file(dir .. "/autoencoder_fan/old_marker", "from the first run\n")
    code, text = run(args)
    A.eq(code, 2, "a second run into the folder; output:\n" .. text)
    A.truthy(text:find("--overwrite", 1, true) and text:find("--resume", 1, true), text)
    code, text = run(args .. " --overwrite")
    A.eq(code, 0, "--overwrite; output:\n" .. text)
    A.truthy(text:find("--overwrite: removed the old run's files", 1, true), text)
    -- The models live in folders inside the run folder: the first one's
    -- checkpoint cleared the old run and the new models are whole.
    A.truthy(not exists(dir .. "/autoencoder_fan/old_marker"), "the old run's files are gone")
    A.truthy(exists(dir .. "/autoencoder_fan/checkpoint.safetensors"), "fan model")
    A.truthy(exists(dir .. "/autoencoder_pump/checkpoint.safetensors"), "pump model")
    A.truthy(exists(dir .. "/config.json"), "the new run's config.json")
    A.truthy(exists(dir .. "/metrics.json"), "the new run's metrics")
end)

test("a killed anomaly run resumes to the same weights and scores, bit for bit", function()
    local data = tiny_corpus()
    local a, b = tmpdir(), tmpdir()
    local code, text = run(common_args(data, a))
    A.eq(code, 0, "uninterrupted run; output:\n" .. text)
    -- 28 normal training clips in batches of 8 (drop_last): 3 steps per epoch;
    -- the kill comes after step 4, in epoch 2, with the epoch-1 checkpoint on disk.
    code, text = run(common_args(data, b), "MACHRT_KILL_AT_STEP=4")
    A.truthy(code ~= 0, "the killed run must not exit cleanly")
    A.truthy(not exists(fold_dir(b) .. "/val_scores.csv"), "killed before scoring")
    code, text = run("--resume " .. fold_dir(b) .. " --environment.number_of_workers=3")
    A.eq(code, 0, "resumed run; output:\n" .. text)
    A.truthy(text:find("resuming"), "the resumed run says so")
    local ta, tb = mt.load(fold_dir(a) .. "/checkpoint.safetensors"), mt.load(fold_dir(b) .. "/checkpoint.safetensors")
    local n = 0
    for name, x in pairs(ta) do
        A.truthy(tb[name], name .. " missing after resume")
        if x:numel() > 0 then A.eq((x:float() - tb[name]:float()):abs():max(), 0, name) end
        n = n + 1
    end
    A.truthy(n > 50, "tensors compared: " .. n)
    A.eq(read(fold_dir(b) .. "/val_scores.csv"), read(fold_dir(a) .. "/val_scores.csv"))
end)

test("a killed autoencoder run resumes each machine type's model bit for bit", function()
    local data = tiny_corpus()
    local a, b = tmpdir(), tmpdir()
    local args = " --anomaly.method=autoencoder --autoencoder.epochs=2 --autoencoder.hidden=16"
    local code, text = run(common_args(data, a) .. args)
    A.eq(code, 0, "uninterrupted run; output:\n" .. text)
    -- The fan model takes more than 4 steps per epoch: killed in its epoch 1 or 2.
    code, text = run(common_args(data, b) .. args, "MACHRT_KILL_AT_STEP=9")
    A.truthy(code ~= 0, "the killed run must not exit cleanly")
    A.truthy(not exists(fold_dir(b) .. "/autoencoder_pump/checkpoint.safetensors"), "pump not started yet")
    code, text = run("--resume " .. fold_dir(b))
    A.eq(code, 0, "resumed run; output:\n" .. text)
    A.truthy(text:find("autoencoder fan: resuming after epoch 1", 1, true), text)
    for _, t in ipairs{ "fan", "pump" } do
        local path = "/autoencoder_" .. t .. "/checkpoint.safetensors"
        local ta, tb = mt.load(fold_dir(a) .. path), mt.load(fold_dir(b) .. path)
        for name, x in pairs(ta) do
            if x:numel() > 0 then A.eq((x:float() - tb[name]:float()):abs():max(), 0, t .. " " .. name) end
        end
    end
    A.eq(read(fold_dir(b) .. "/val_scores.csv"), read(fold_dir(a) .. "/val_scores.csv"))
end)

test("training data without a normal clip is refused", function()
    local data, out = tiny_corpus(), tmpdir()
    local csv = csv_variant(data, function(r) return r[5] == "abnormal" end)
    local code, text = run(common_args(data, out, csv))
    A.truthy(code ~= 0, "must fail")
    A.truthy(text:find("no normal clip to train on", 1, true), text)
end)

test("a machine with a single normal clip: a clear error for Mahalanobis, a fallback for cosine", function()
    local data, out = tiny_corpus(), tmpdir()
    local seen = false
    local csv = csv_variant(data, function(r)
        if r[3] == "fan" and r[4] == "02" and r[5] == "normal" then
            if seen then return false end
            seen = true
        end
        return true
    end)
    local val = csv_variant(data, function(r) return r[5] == "abnormal" or r[4] == "00" end)
    local args = common_args(data, out, csv) .. " --dataset.validation_dataframe=" .. val
    local code, text = run(args)
    A.truthy(code ~= 0, "must fail")
    A.truthy(text:find("machine fan/id_02 has a single normal training clip", 1, true), text)
    code, text = run(args:gsub(out, tmpdir()) .. " --anomaly.score=cosine --anomaly.shrinkage=0.3")
    A.eq(code, 0, "cosine needs only the mean; output:\n" .. text)
    A.truthy(text:find("no Mahalanobis score for it", 1, true), text)
end)

test("a validation set without abnormal clips has no AUC, and says so", function()
    local data, out = tiny_corpus(), tmpdir()
    local val = csv_variant(data, function(r) return r[5] == "normal" end)
    local code, text = run(common_args(data, out) .. " --dataset.validation_dataframe=" .. val)
    A.eq(code, 0, "output:\n" .. text)
    A.truthy(text:find("AUC undefined for fan/id_00: no abnormal clip", 1, true), text)
    A.truthy(text:find("AUC is undefined", 1, true), text)
    local m = sys.json_decode(read(fold_dir(out) .. "/metrics.json"))
    A.eq(m.evaluation.mean_auc, nil)
    A.eq(m.evaluation.per_machine["fan/id_00"].auc, nil)
    A.eq(m.evaluation.per_machine["fan/id_00"].undefined, "no abnormal clip")
    A.truthy(not read(fold_dir(out) .. "/metrics.json"):find("0.5,", 1, true), "no AUC of 0.5 stands in")
end)

test("validation clips that are training clips too are said to be scored in-sample", function()
    local data, out = tiny_corpus(), tmpdir()
    local code, text = run(common_args(data, out) .. " --dataset.validation_dataframe=" .. data .. "/dataset.csv"
                           .. " --anomaly.method=autoencoder --autoencoder.epochs=1")
    A.eq(code, 0, "output:\n" .. text)
    local normal = 0
    for _, r in ipairs(F.csv_rows(data .. "/dataset.csv")) do if r[5] == "normal" then normal = normal + 1 end end
    A.truthy(text:find(string.format("validation: %d of the 48 clips are training clips too: their scores are "
                                     .. "in-sample", normal), 1, true), text)
    A.eq(sys.json_decode(read(fold_dir(out) .. "/metrics.json")).in_sample_validation_clips, normal)
    code, text = run(common_args(data, tmpdir()) .. " --anomaly.method=autoencoder --autoencoder.epochs=1")
    A.eq(code, 0, "output:\n" .. text)
    A.eq(text:find("in-sample (the detector", 1, true), nil, "a split fold has no training clip in it")
end)

test("CSVs without model_id or condition: one machine per type; scored but not evaluated", function()
    local data, out = tiny_corpus(), tmpdir()
    local no_id = csv_variant(data, function() return true end, { model_id = true })
    local code, text = run(common_args(data, out, no_id))
    A.eq(code, 0, "output:\n" .. text)
    A.truthy(text:find("each machine type is one machine", 1, true), text)
    local m = sys.json_decode(read(fold_dir(out) .. "/metrics.json"))
    A.eq(m.evaluation.machines, { "fan", "pump" })
    local no_condition = csv_variant(data, function(r) return r[5] == "normal" end, { condition = true })
    out = tmpdir()
    code, text = run(common_args(data, out, no_condition))
    A.eq(code, 0, "output:\n" .. text)
    A.truthy(text:find("AUC and pAUC cannot be computed", 1, true), text)
    A.truthy(exists(fold_dir(out) .. "/val_scores.csv"), "the clips are still scored")
end)

test("unknown anomaly settings are refused up front, naming the key and the choices", function()
    local data, out = tiny_corpus(), tmpdir()
    -- The schema (machrt.anomaly.data.SCHEMA) refuses them before any work:
    -- one line and exit status 2, the key and what it takes.
    local code, text = run(common_args(data, out) .. " --anomaly.method=forest")
    A.eq(code, 2, text)
    A.truthy(text:find("anomaly.method = 'forest': expects one of embedding, autoencoder", 1, true), text)
    code, text = run(common_args(data, out) .. " --anomaly.target_false_positive_rate=1.5")
    A.eq(code, 2, text)
    A.truthy(text:find("anomaly.target_false_positive_rate", 1, true), text)
    code, text = run(common_args(data, out) .. " --anomaly.shrinkage=lots")
    A.eq(code, 2, text)
    A.truthy(text:find("anomaly.shrinkage = 'lots': must be 'ledoit-wolf' or a number in [0, 1]", 1, true), text)
    code, text = run(common_args(data, out) .. " --anomaly.method=AUTOENCODER --help")
    A.eq(code, 0, "a value in other case is accepted, and --help lists the anomaly keys: " .. text)
    A.truthy(text:find("embedding, autoencoder", 1, true), text)
    A.truthy(not exists(fold_dir(out)), "nothing was written")
end)

-- One trained embedding run shared by the inference tests.
local trained
local function trained_run()
    if not trained then
        local out = make_tmpdir{ create = false, keep = true }
        local code, text = run(common_args(tiny_corpus(), out))
        A.eq(code, 0, "training; output:\n" .. text)
        trained = fold_dir(out)
    end
    return trained
end

local lines_of = F.lines

test("predict.lua --run and the scorer's score.lua give the validation scores and decisions", function()
    local dir, data = trained_run(), tiny_corpus()
    local rows = F.csv_rows(dir .. "/val_scores.csv")
    local code, text = F.run(string.format("./machrt scripts/predict.lua --run %s --input %s/%s --machine %s/id_%s",
        dir, data, rows[2][1], rows[2][2], rows[2][3]))
    A.eq(code, 0, text)
    local got = lines_of(text)
    A.eq(got[1], "file,machine,anomaly_score,threshold,is_anomaly,chunks,error")
    local cells = {}
    for c in (got[2] .. ","):gmatch("([^,]*),") do cells[#cells + 1] = c end
    A.near(tonumber(cells[3]), tonumber(rows[2][5]), 1e-4, "predict's score is the run's validation score")
    A.eq(cells[5], rows[2][6], "the same decision")
    local m = sys.json_decode(read(dir .. "/scorer/manifest.json"))
    A.eq(m.format, "machrt-anomaly-scorer")
    for _, f in ipairs(m.files) do A.eq(#f.sha256, 64, f.file .. " checksum") end
    code, text = F.run(string.format("./machrt %s/scorer/score.lua --machine %s/id_%s %s/%s", dir, rows[2][2],
        rows[2][3], data, rows[2][1]))
    A.eq(code, 0, text)
    A.eq(lines_of(text)[2], got[2], "score.lua prints what predict.lua prints")
    code, text = F.run(string.format("./machrt %s/scorer/score.lua --machine drill/id_09 %s/%s", dir, data, rows[2][1]))
    A.truthy(text:find("machine 'drill/id_09' is not one this detector knows", 1, true), text)
end)

test("monitor.lua scores a WAV or raw PCM stream from a pipe, one flushed line per window", function()
    local dir, data = trained_run(), tiny_corpus()
    local wav = data .. "/" .. F.csv_rows(dir .. "/val_scores.csv")[2][1]
    local args = " --machine fan/id_00 --window 4 --hop 2"
    local code, text = F.run(string.format("cat %s | ./machrt scripts/monitor.lua --run %s -%s", wav, dir, args))
    A.eq(code, 0, text)
    local l = lines_of(text)
    A.eq(l[1], "time,machine,anomaly_score,threshold,is_anomaly")
    -- A 10 s clip, windows of 4 s every 2 s: at 0, 2, 4 and 6 s.
    local windows = {}
    for _, line in ipairs(l) do if line:match("^%d") then windows[#windows + 1] = line end end
    A.eq(#windows, 4, text)
    A.truthy(windows[4]:match("^6%.000,fan/id_00,[%d.e+-]+,[%d.e+-]+,(%a+)$"), windows[4])
    -- The same samples as raw 16-bit PCM (the WAV's 44-byte header cut off).
    local raw_code, raw = F.run(string.format("tail -c +45 %s | ./machrt scripts/monitor.lua --scorer %s/scorer -"
        .. " --format s16le --rate 16000 --channels 1%s", wav, dir, args))
    A.eq(raw_code, 0, raw)
    local raw_windows = {}
    for _, line in ipairs(lines_of(raw)) do if line:match("^%d") then raw_windows[#raw_windows + 1] = line end end
    A.eq(raw_windows, windows)
    -- Flushed at once: the writer holds back the rest of the stream until the
    -- first window's line has arrived (or gives up after a minute). It sends
    -- the header and 16 blocks of 4096 samples (4.1 s: the monitor reads
    -- whole blocks), enough for the first 4 s window.
    local tmp = make_tmpdir()
    local cmd = string.format("{ head -c 131116 %s; i=0; while [ $i -lt 600 ] && ! grep -q '^0.000' %s/out.csv 2>/dev/null; "
        .. "do sleep 0.1; i=$((i+1)); done; grep -q '^0.000' %s/out.csv && touch %s/seen; tail -c +131117 %s; } "
        .. "| ./machrt scripts/monitor.lua --run %s -%s > %s/out.csv", wav, tmp, tmp, tmp, wav, dir, args, tmp)
    code, text = F.run(cmd)
    A.eq(code, 0, text)
    A.truthy(exists(tmp .. "/seen"), "the first line was written before the stream went on")
    A.eq(#lines_of(read(tmp .. "/out.csv")), 5)
end)

test("monitor.lua refuses what it cannot read, naming it", function()
    local dir = trained_run()
    local code, text = F.run(string.format("echo hello | ./machrt scripts/monitor.lua --run %s -", dir))
    A.eq(code, 2)
    A.truthy(text:find("WAV", 1, true), text)
    code, text = F.run(string.format("head -c 1000 /dev/zero | ./machrt scripts/monitor.lua --run %s - --format s16le", dir))
    A.truthy(text:find("--rate", 1, true), text)
    code, text = F.run(string.format("head -c 1000 /dev/zero | ./machrt scripts/monitor.lua --run %s - --format s16le"
        .. " --rate 16000 --channels 1 --machine fan/id_77", dir))
    A.truthy(text:find("fan/id_77 is not one this detector knows", 1, true), text)
end)

return tests
