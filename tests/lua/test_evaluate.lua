-- scripts/evaluate.lua as a user runs it (a child process) on a tiny
-- trained run: its scores equal machrt.metrics computed here from its own
-- predictions file, the breakdown per model_id equals the one counted here,
-- and bad input is named.

local A = require "assert"
local sys = require "machrt.sys"
local metrics = require "machrt.metrics"

local F = require "files"
local tests, test, make_tmpdir = F.suite()
local read, exists, csv_rows = F.read, F.exists, F.csv_rows

local CLASSES = { "fan", "pump", "slider", "valve" }

-- One corpus and one trained fold for the whole file (made once).
local shared
local function trained()
    if shared then return shared end
    local data = make_tmpdir{ create = false, keep = true }
    require("machrt.synth").generate(data, { clips = 40, seed = 5 })
    local out = make_tmpdir{ create = false, keep = true }
    local code, text = F.run(table.concat({
        "./machrt experiments/resnet34.lua",
        "--dataset.data_folder=" .. data, "--dataset.train_dataframe=" .. data .. "/dataset.csv",
        "--architecture.width=4", "--training.batch_size=8", "--training.epochs=1",
        "--environment.number_of_workers=2", "--environment.seed=11", "--training.run_interpretations=false",
        "--audio.training_chunk_seconds=4", "--prediction.inference_chunk_seconds=5",
        "--output_directory=" .. out,
    }, " "))
    A.eq(code, 0, "training the tiny run; output:\n" .. text)
    shared = { data = data, run = out .. "/final_machinetype_audio_classification/fold4" }
    return shared
end

local function evaluate(args)
    return F.run("./machrt scripts/evaluate.lua " .. args)
end

-- A copy of the corpus CSV whose rows are changed by edit(cells, r) (r: 1-based data row).
local function edited_csv(dir, data, edit)
    local lines = {}
    for line in read(data .. "/dataset.csv"):gmatch("[^\n]+") do
        if #lines > 0 then
            local cells = {}
            for cell in (line .. ","):gmatch("([^,]*),") do cells[#cells + 1] = cell end
            edit(cells, #lines)
            line = table.concat(cells, ",")
        end
        lines[#lines + 1] = line
    end
    local path = dir .. "/edited.csv"
    sys.write_file(path, table.concat(lines, "\n") .. "\n")
    return path
end

test("scores equal machrt.metrics over its predictions; the breakdown per model_id", function()
    local t = trained()
    local out = make_tmpdir{ create = false }
    local code, text = evaluate("--run " .. t.run .. " --input " .. t.data .. "/dataset.csv --out " .. out)
    A.eq(code, 0, "output:\n" .. text)
    for _, f in ipairs{ "metrics.json", "per_class.csv", "confusion.csv", "predictions.csv",
                        "breakdown_model_id.csv", "breakdown_condition.csv", "breakdown_snr_db.csv" } do
        A.truthy(exists(out .. "/" .. f), f .. " written; output:\n" .. text)
    end
    A.truthy(not exists(out .. "/breakdown_Unnamed__0.csv"), "no breakdown by the index")
    local pred = csv_rows(out .. "/predictions.csv")
    A.eq(pred[1], { "", "audio", "label", "predicted", "p_fan", "p_pump", "p_slider", "p_valve", "error" })
    A.eq(#pred - 1, 40)
    -- Joined back onto the input CSV on its index: same clip, same label.
    local input = {}
    for r, row in ipairs(csv_rows(t.data .. "/dataset.csv")) do if r > 1 then input[row[1]] = row end end
    local class_of = {}
    for c, name in ipairs(CLASSES) do class_of[name] = c end
    local probs, truth, model_ids = {}, {}, {}
    for r = 2, #pred do
        local row, src = pred[r], input[pred[r][1]]
        A.eq({ row[2], row[3] }, { src[2], src[3] }, "row " .. (r - 1) .. " joins on the index")
        probs[r - 1] = { tonumber(row[5]), tonumber(row[6]), tonumber(row[7]), tonumber(row[8]) }
        truth[r - 1] = class_of[row[3]]
        model_ids[r - 1] = src[4]
    end
    local m = metrics.classification(probs, truth, CLASSES)
    local got = sys.json_decode(read(out .. "/metrics.json"))
    A.eq(got.clips, 40)
    A.eq(got.unreadable, 0)
    A.near(got.f1, m.f1, 1e-9, "macro F1")
    A.near(got.accuracy, m.accuracy, 1e-9, "accuracy")
    A.near(got.roc_auc, m.roc_auc, 1e-6, "ROC AUC")
    A.eq(got.confusion, m.confusion)
    for r = 2, #pred do A.eq(pred[r][4], CLASSES[m.predicted[r - 1]], "predicted, row " .. (r - 1)) end
    local per_class = csv_rows(out .. "/per_class.csv")
    for c = 1, 4 do
        A.eq(per_class[c + 1][1], CLASSES[c])
        A.near(tonumber(per_class[c + 1][4]), m.per_class[c].f1, 1e-5, CLASSES[c] .. " F1")
        A.eq(tonumber(per_class[c + 1][5]), m.per_class[c].support)
    end
    -- Per model_id: clips, errors and accuracy counted here.
    local by = {}
    for i, id in ipairs(model_ids) do
        by[id] = by[id] or { clips = 0, errors = 0 }
        by[id].clips = by[id].clips + 1
        if m.predicted[i] ~= truth[i] then by[id].errors = by[id].errors + 1 end
    end
    local rows = csv_rows(out .. "/breakdown_model_id.csv")
    A.eq(rows[1], { "model_id", "clips", "errors", "accuracy", "f1" })
    local ids = {}
    for id in pairs(by) do ids[#ids + 1] = id end
    A.eq(#rows - 1, #ids, "one row per model_id")
    for r = 2, #rows do
        local e = by[rows[r][1]]
        A.truthy(e, "model_id " .. rows[r][1])
        A.eq({ tonumber(rows[r][2]), tonumber(rows[r][3]) }, { e.clips, e.errors }, "model_id " .. rows[r][1])
        A.near(tonumber(rows[r][4]), 1 - e.errors / e.clips, 1e-5, "accuracy of " .. rows[r][1])
    end
    A.truthy(text:find("by model_id", 1, true) and text:find("macro F1", 1, true), "summary printed:\n" .. text)
    -- The scorer folder scores the same.
    local out2 = make_tmpdir{ create = false }
    code, text = evaluate("--run " .. t.run .. "/scorer --input " .. t.data .. "/dataset.csv --out " .. out2)
    A.eq(code, 0, "scorer; output:\n" .. text)
    A.near(sys.json_decode(read(out2 .. "/metrics.json")).f1, got.f1, 1e-9, "scorer F1")
end)

test("an unreadable file is counted, listed and makes the exit status 1", function()
    local t = trained()
    local dir = make_tmpdir()
    local csv = edited_csv(dir, t.data, function(cells, r)
        if r == 3 then cells[2] = "fan/missing.wav" end
    end)
    local out = dir .. "/out"
    local code, text = evaluate("--run " .. t.run .. " --input " .. csv .. " --data-folder " .. t.data
                                .. " --out " .. out)
    A.eq(code, 1, "output:\n" .. text)
    A.truthy(text:find("1 of 40 files could not be read", 1, true), text)
    local got = sys.json_decode(read(out .. "/metrics.json"))
    A.eq({ got.clips, got.unreadable }, { 39, 1 })
    A.eq(got.unreadable_files[1].row, 3)
    local pred = csv_rows(out .. "/predictions.csv")
    A.eq(pred[4][2], "fan/missing.wav")
    A.truthy(pred[4][9]:find("missing.wav", 1, true), "the reason: " .. pred[4][9])
end)

test("bad input: a missing label column, an unknown label, no --run, --help", function()
    local t = trained()
    local dir = make_tmpdir()
    local csv = edited_csv(dir, t.data, function(cells, r) if r == 5 then cells[3] = "compressor" end end)
    local code, text = evaluate("--run " .. t.run .. " --input " .. csv .. " --data-folder " .. t.data)
    A.eq(code, 2, text)
    A.truthy(text:find("row 5", 1, true) and text:find("label 'compressor' in column 'label' is not a class "
                       .. "of the run (classes: fan, pump, slider, valve)", 1, true), text)
    code, text = evaluate("--run " .. t.run .. " --input " .. t.data .. "/dataset.csv --label kind")
    A.eq(code, 2, text)
    A.truthy(text:find("column 'kind' not found", 1, true) and text:find("columns present", 1, true), text)
    code, text = evaluate("--input " .. t.data .. "/dataset.csv")
    A.eq(code, 2, text)
    A.truthy(text:find("give --run DIR", 1, true) and text:find("--help shows the usage", 1, true), text)
    code, text = evaluate("--run " .. dir .. " --input " .. t.data .. "/dataset.csv")
    A.eq(code, 2, text)
    A.truthy(text:find("not a run folder", 1, true), text)
    code, text = evaluate("--help")
    A.eq(code, 0, text)
    A.truthy(text:find("--input FILE", 1, true) and text:find("breakdown_<column>.csv", 1, true), text)
end)

return tests
