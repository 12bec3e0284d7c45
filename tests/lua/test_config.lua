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

return T
