-- machrt.config: typed command-line overrides of an experiment's defaults,
-- the errors for unknown sections, keys and bad values, --resume / --help,
-- and config.describe.

local config = require "machrt.config"
local A = require "assert"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

-- A fresh defaults table shaped like the experiments' (sections, top-level
-- keys, list values).
local function defaults()
    return {
        experiment_name = "base",
        output_directory = "runs",
        architecture = { backbone = "resnet34", dropout = 0, pretrained = false },
        dataset = { data_folder = "", folds = { "4" }, cache = "memory" },
        training = { epochs = 5, batch_size = 32, learning_rate = 0.001,
                     drop_last_batch = true, optimizer = "AdamW", layers = {} },
    }
end

local function parse(...)
    return config.from_args(defaults(), { ... })
end

test("numbers take the default's type: integers stay integers, floats parse", function()
    local cfg = parse("--training.epochs=2", "--training.learning_rate=3e-4", "--training.batch_size=8.0")
    A.eq(cfg.training.epochs, 2)
    A.eq(math.type(cfg.training.epochs), "integer")
    A.eq(math.type(cfg.training.batch_size), "integer")
    A.eq(cfg.training.batch_size, 8)
    A.eq(math.type(cfg.training.learning_rate), "float")
    A.near(cfg.training.learning_rate, 3e-4, 1e-15)
    -- A default written as 0 (dropout) still accepts a fraction.
    A.eq(parse("--architecture.dropout=0.25").architecture.dropout, 0.25)
    A.eq(parse("--training.epochs=-1").training.epochs, -1)
    -- Everything else is left at its default.
    A.eq(cfg.training.optimizer, "AdamW")
    A.eq(cfg.architecture, defaults().architecture)
end)

test("booleans: true/false/yes/no/1/0 in any case; anything else names the key", function()
    local cases = { ["true"] = true, ["false"] = false, yes = true, no = false, ["1"] = true,
                    ["0"] = false, TRUE = true, No = false }
    for text, want in pairs(cases) do
        local cfg = parse("--architecture.pretrained=" .. text, "--training.drop_last_batch=" .. text)
        A.eq(cfg.architecture.pretrained, want, text)
        A.eq(cfg.training.drop_last_batch, want, text)
    end
    A.raises(function() parse("--architecture.pretrained=maybe") end,
        "architecture.pretrained", "true or false", "'maybe'")
end)

test("strings are taken as written, '=' inside the value included", function()
    local cfg = parse("--training.optimizer=SGD", "--dataset.data_folder=/data/a=b c")
    A.eq(cfg.training.optimizer, "SGD")
    A.eq(cfg.dataset.data_folder, "/data/a=b c")
    A.eq(parse("--dataset.cache=").dataset.cache, "")
    -- The last of two overrides wins.
    A.eq(parse("--training.epochs=2", "--training.epochs=7").training.epochs, 7)
end)

test("lists: comma-separated, trimmed, empty text is an empty list", function()
    A.eq(parse("--dataset.folds=0,1").dataset.folds, { "0", "1" })
    A.eq(parse("--dataset.folds= 2 , 3,4").dataset.folds, { "2", "3", "4" })
    A.eq(parse("--dataset.folds=").dataset.folds, {})
    A.eq(parse("--training.layers=conv1,fc").training.layers, { "conv1", "fc" })
    -- With an element type for the key, the items are typed.
    local cfg = config.from_args(defaults(), { "--dataset.folds=0,3" }, { ["dataset.folds"] = 0 })
    A.eq(cfg.dataset.folds, { 0, 3 })
    A.eq(math.type(cfg.dataset.folds[2]), "integer")
    A.raises(function()
        config.from_args(defaults(), { "--dataset.folds=0,x" }, { ["dataset.folds"] = 0 })
    end, "dataset.folds expects a number", "'x'")
end)

test("an unknown section lists the sections", function()
    local msg = A.raises(function() parse("--trainig.epochs=2") end,
        "unknown section 'trainig'", "architecture, dataset, training")
    -- Top-level keys and lists are not sections.
    A.truthy(not msg:find("experiment_name", 1, true), msg)
    A.raises(function() parse("--experiment_name.x=1") end, "unknown section 'experiment_name'")
    A.raises(function() parse("--dataset.folds.x=1") end, "not section.key")
end)

test("an unknown key lists the section's keys", function()
    A.raises(function() parse("--training.epoch=2") end,
        "unknown key 'epoch' in section 'training'",
        "batch_size, drop_last_batch, epochs, layers, learning_rate, optimizer")
end)

test("a bad number names the key and the text", function()
    A.raises(function() parse("--training.epochs=two") end, "training.epochs expects a number", "'two'")
    A.raises(function() parse("--training.learning_rate=1e-") end, "training.learning_rate", "'1e-'")
end)

test("every override that cannot be read is listed in one error", function()
    local msg = A.raises(function() parse("--training.epochs=two", "--training.epoch=3", "--training.batch_size=8") end,
        "config: 2 settings are invalid:\n  training.epochs expects a number, got 'two'\n  "
        .. "unknown key 'epoch' in section 'training'")
    A.eq(select(2, msg:gsub("\n", "")), 2, msg)
end)

test("top-level keys: --experiment_name=x; sections and unknown names are refused", function()
    local cfg = parse("--experiment_name=trial", "--output_directory=/tmp/out")
    A.eq(cfg.experiment_name, "trial")
    A.eq(cfg.output_directory, "/tmp/out")
    A.raises(function() parse("--nosuch=1") end, "unknown key 'nosuch'",
        "top-level keys: experiment_name, output_directory", "sections: architecture, dataset, training")
    A.raises(function() parse("--training=3") end, "unknown key 'training'")
end)

test("--resume DIR, --resume=DIR, --help and -h", function()
    local cfg, opts = parse("--resume", "runs/x/fold4", "--training.epochs=9")
    A.eq(opts.resume, "runs/x/fold4")
    A.eq(cfg.training.epochs, 9)
    A.eq(opts.help, nil)
    local _, o2 = parse("--resume=runs/y/fold0")
    A.eq(o2.resume, "runs/y/fold0")
    A.truthy(select(2, parse("--help")).help)
    A.truthy(select(2, parse("-h")).help)
    A.raises(function() parse("--resume") end, "--resume needs a run folder")
    A.raises(function() parse("epochs=3") end, "cannot read argument 'epochs=3'")
    A.raises(function() parse("--training.epochs") end, "cannot read argument '--training.epochs'")
    local _, o3 = parse("--training.epochs=3", "--dataset.folds=0,1")
    A.eq(o3.overrides, { { path = "training.epochs", text = "3" }, { path = "dataset.folds", text = "0,1" } })
end)

test("the defaults table is not modified, nor shared with the result", function()
    local d = defaults()
    local cfg = config.from_args(d, { "--training.epochs=2", "--dataset.folds=0,1",
                                      "--experiment_name=z", "--architecture.pretrained=yes" })
    A.eq(d, defaults())
    cfg.dataset.folds[1] = "changed"
    cfg.training.layers[1] = "added"
    A.eq(d, defaults())
    local c0 = config.from_args(d, nil)
    A.eq(c0, defaults())
    A.truthy(c0 ~= d and c0.training ~= d.training and c0.dataset.folds ~= d.dataset.folds,
        "from_args must return copies")
end)

test("describe: one sorted 'section.key = value' line per setting", function()
    local cfg = parse("--dataset.folds=0,1")
    local want = {
        "architecture.backbone = resnet34",
        "architecture.dropout = 0",
        "architecture.pretrained = false",
        "dataset.cache = memory",
        "dataset.data_folder = ",
        "dataset.folds = [0, 1]",
        "experiment_name = base",
        "output_directory = runs",
        "training.batch_size = 32",
        "training.drop_last_batch = true",
        "training.epochs = 5",
        "training.layers = []",
        "training.learning_rate = 0.001",
        "training.optimizer = AdamW",
    }
    local lines = config.describe(cfg)
    A.eq(lines, want)
    for i = 2, #lines do A.truthy(lines[i - 1] < lines[i], "not sorted at line " .. i) end
end)

-- ---- the schema -----------------------------------------------------------------

local schema = require "machrt.schema"

-- The defaults of experiments/resnet34.lua as the script passes them to
-- train.setup (its own table, not a copy kept here).
local function reference_defaults()
    local captured
    local stub = { setup = function(d) captured = d; error("captured", 0) end }
    local env = setmetatable({ require = function(name)
        if name == "machrt.train" then return stub end
        return require(name)
    end }, { __index = _G })
    local chunk = assert(loadfile("experiments/resnet34.lua", "t", env))
    local ok, err = pcall(chunk)
    A.truthy(not ok and err == "captured" and captured, "experiments/resnet34.lua did not call train.setup")
    return captured
end

-- The experiment's defaults with overrides, validated against the reference schema.
local function checked(...)
    local cfg = config.from_args(reference_defaults(), { ... })
    return config.validate(cfg, schema.reference)
end

test("the reference defaults pass, and every key of them has a schema entry", function()
    local cfg = checked()
    A.eq(cfg.architecture.pool, "GeM")
    for _, line in ipairs(config.describe(cfg)) do
        local key = line:match("^(%S+) = ")
        A.truthy(schema.reference[key], "no schema entry for " .. key)
    end
    A.raises(function() config.validate({ training = { nosuch = 1 } }, schema.reference) end,
        "setting 'training.nosuch' has no schema entry")
end)

test("values that failed with raw Lua errors, or were silently accepted, are refused by key", function()
    local cases = {
        { "--training.epochs=1.5", "training.epochs = 1.5: expects an integer >= 1" },
        { "--training.grad_accumulation=0", "training.grad_accumulation = 0: expects an integer >= 1" },
        { "--training.evaluation_epochs=0", "training.evaluation_epochs = 0: expects an integer >= 1" },
        { "--environment.seed=1e30", "environment.seed = 1e+30: expects an integer >= -1" },
        { "--environment.seed=-2", "environment.seed = -2: expects an integer >= -1" },
        { "--training.differential_learning_rate_layers=layer4,stem",
          "stem matches no layer of resnet34 (layers: conv1, bn1, layer1, layer2, layer3, layer4, pool, fc" },
        { "--audio.stft_window_size=3", "gives 2 frequency bins, fewer than the 128 mel filters" },
        { "--audio.channel=0", "audio.channel = 0: expects an integer >= 1" },
        { "--audio.resampler=sinc", "audio.resampler = 'sinc': expects one of soxr, torchaudio" },
        { "--architecture.pool=max", "architecture.pool = 'max': expects one of GeM, Avg" },
        { "--dataset.folds=1,x", "dataset.folds = [1, x]: expects a non-empty comma-separated list of integers >= 0" },
        { "--dataset.folds=", "dataset.folds = []" },
        { "--dataset.validation_size=0.9", "gives k = 1 fold; k-fold needs at least 2" },
        { "--dataset.validation_strategy=custom", "dataset.validation_dataframe = '': is empty, and "
          .. "dataset.validation_strategy = custom needs it" },
        { "--dataset.train_dataframe=/no/such.csv", "dataset.train_dataframe = '/no/such.csv': no such file" },
        { "--training.warmup_epochs=6", "training.warmup_epochs = 6: is more than training.epochs (5)" },
        { "--audio.maximum_frequency=40", "must be above audio.minimum_frequency (50)" },
        { "--architecture.pretrained=true", "no pretrained weights ship with machrt" },
        { "--prediction.max_inference_chunk_seconds=2", "is below prediction.inference_chunk_seconds (5)" },
    }
    for _, c in ipairs(cases) do
        local msg = A.raises(function() checked(c[1]) end, c[2])
        A.truthy(msg:match("^config: ") and not msg:find("\n", 1, true), c[1] .. ": one line: " .. msg)
    end
    -- The names that do match pass, dotted ones (a block) included.
    A.eq(checked("--training.differential_learning_rate_layers=layer4.2,fc")
        .training.differential_learning_rate_layers, { "layer4.2", "fc" })
end)

test("allowed values match in any case and are stored as the code spells them", function()
    local cfg = checked("--architecture.pool=avg", "--training.optimizer=adamw", "--training.schedule=CONSTANT",
                        "--dataset.validation_strategy=KFold", "--environment.device=CPU",
                        "--prediction.metric=logloss", "--augmentation.mix_audio=enabled",
                        "--audio.resampler=TorchAudio")
    A.eq(cfg.architecture.pool, "Avg")
    A.eq(cfg.training.optimizer, "AdamW")
    A.eq(cfg.training.schedule, "Constant")
    A.eq(cfg.dataset.validation_strategy, "kfold")
    A.eq(cfg.environment.device, "cpu")
    A.eq(cfg.prediction.metric, "LogLoss")
    A.eq(cfg.augmentation.mix_audio, "Enabled")
    A.eq(cfg.audio.resampler, "torchaudio")
    -- Integral floats of integer keys become integers (a config.json read back).
    local c2 = reference_defaults()
    c2.training.epochs = 3.0
    A.eq(math.type(config.validate(c2, schema.reference).training.epochs), "integer")
end)

test("one error lists every problem, each with its key and allowed values or range", function()
    local msg = A.raises(function()
        checked("--training.epochs=1.5", "--architecture.pool=max", "--training.grad_accumulation=0",
                "--dataset.cache=ram", "--audio.stft_window_size=3")
    end, "config: 5 settings are invalid:")
    local lines = {}
    for l in msg:gmatch("[^\n]+") do lines[#lines + 1] = l end
    A.eq(#lines, 6, msg)
    A.truthy(lines[2]:find("architecture.pool = 'max': expects one of GeM, Avg", 1, true), msg)
    A.truthy(lines[3]:find("audio.stft_window_size = 3", 1, true), msg)
    A.truthy(lines[4]:find("dataset.cache = 'ram': expects one of memory, disk, none", 1, true), msg)
    A.truthy(lines[5]:find("training.epochs = 1.5", 1, true), msg)
    A.truthy(lines[6]:find("training.grad_accumulation = 0", 1, true), msg)
    A.eq(#config.problems(config.from_args(reference_defaults(), {}), schema.reference), 0)
    -- Folders and files are checked with the rest.
    msg = A.raises(function() checked("--dataset.data_folder=/no/such/folder") end, "2 settings are invalid")
    A.truthy(msg:find("dataset.data_folder = '/no/such/folder': no such folder", 1, true)
             and msg:find("dataset.train_dataframe = '': is empty but dataset.data_folder is set", 1, true), msg)
end)

test("an experiment adds keys of its own to the reference ones", function()
    local keys = schema.with{ ["anomaly.threshold"] = { "number", min = 0, max = 1, about = "score cut" } }
    local d = reference_defaults()
    d.anomaly = { threshold = 0.5 }
    A.eq(config.validate(config.copy(d), keys).anomaly.threshold, 0.5)
    A.raises(function() config.validate(config.from_args(d, { "--anomaly.threshold=2" }), keys) end,
        "anomaly.threshold = 2: expects a number in [0, 1]")
    A.raises(function() config.validate(config.copy(d), schema.reference) end, "'anomaly.threshold' has no schema entry")
    A.eq(schema.reference["anomaly.threshold"], nil, "schema.with leaves the reference as it is")
end)

test("--help lines: each setting, then its allowed values or range and its meaning", function()
    local cfg = checked("--architecture.pool=avg")
    local lines = config.help(cfg, schema.reference)
    local text = table.concat(lines, "\n")
    A.truthy(text:find("architecture.pool = Avg\n    one of GeM, Avg: pooling", 1, true), text)
    A.truthy(text:find("training.epochs = 5\n    an integer >= 1: passes over the training data", 1, true), text)
    A.truthy(text:find("dataset.cache = memory\n    one of memory, disk, none:", 1, true), text)
    A.truthy(text:find("architecture.dropout = 0\n    a number in [0, 1):", 1, true), text)
    -- Every setting line is followed by its rule line.
    A.eq(#lines, 2 * #config.describe(cfg))
end)

return T
