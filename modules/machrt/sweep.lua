-- Hyperparameter sweeps over an experiment script (see scripts/sweep.lua).
--
--   local sweep = require "machrt.sweep"
--   local opts = sweep.parse_args(arg)        -- --grid/--random/--range/--choice/...
--   local trials = sweep.trials(opts)         -- {{overrides = {{path=, text=}, ...}}, ...}
--   local ok = sweep.run(opts, host)          -- runs them, writes results.csv
--
-- Each trial is the experiment started as its own process, so a crash or a
-- NaN in one trial never takes the others down, and `--jobs N` is N
-- processes (Lua has no fork: each trial is a background shell that writes
-- its exit status to a file the sweep polls for).

local mt = require "machrt"
local sys = require "machrt.sys"
local log = require "machrt.log"
local random = require "machrt.random"

local M = {}

M.USAGE = [[
usage: machrt scripts/sweep.lua EXPERIMENT [sweep options] [--section.key=value ...]

  --grid KEY=V1,V2,...        a grid axis; the trials are the cartesian product
  --random N                  N trials drawn from the --range and --choice axes
  --range KEY=LO:HI[:SCALE]   SCALE lin (default), log or int
  --choice KEY=A,B,...        one of the values, uniformly
  --seed N                    draws and environment.seed of every trial (default 1)
  --jobs N                    trials at once (default 1); threads are split between them
  --out DIR                   sweep folder (default runs/sweeps/<name>)
  --name NAME                 sweep name (default: the experiment file's name)
  --metric M                  f1 (default, also val_f1), accuracy, roc_auc or loss
  --section.key=value         a fixed override for every trial (e.g. --training.epochs=1)

Slurm (one job-array task per trial; results in the same results.csv):
  --slurm                     write <out>/sweep.sbatch instead of running the trials here
  --submit                    and submit it with sbatch (unfinished trials only)
  --slurm-wait                sbatch --wait: return when the array has ended
  --slurm-parallel P          at most P trials at once (--array=...%P; default: all)
  --slurm-ntasks N            ranks per trial, started with --slurm-launcher
                              (default "mpirun -np N")
  --slurm-cpus-per-task N, --slurm-time T, --slurm-partition P, --slurm-mem M, --slurm-gpus G
  --slurm-sbatch OPTION       any other sbatch option, e.g. --slurm-sbatch=--account=x (repeatable)
  --slurm-template FILE       lines put in the script after the #SBATCH lines (module loads, ...)

Each trial runs in <out>/trial_NNN (trial.json, output.log, run/fold<k>/).
A rerun with the same arguments skips finished trials and resumes the others.
Results: <out>/results.csv, sorted by the metric, and the best trial's command.
]]

local METRICS = { f1 = true, accuracy = true, roc_auc = true, loss = true }
local RESULT_COLUMNS = { "f1", "accuracy", "roc_auc", "loss" }

local function fail(fmt, ...) error("sweep: " .. string.format(fmt, ...), 0) end

-- Shell quoting: every argument goes through sh, values may hold anything.
local function q(s)
    s = tostring(s)
    if s:match("^[%w_%-%.,:=/+]+$") then return s end
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function exists(path) return sys.stat(path) ~= nil end

local read = sys.read_file -- nil when missing

local function split_list(text, what)
    local items = {}
    for item in (text .. ","):gmatch("([^,]*),") do
        item = item:match("^%s*(.-)%s*$")
        if item == "" then fail("%s: empty value in the list '%s'", what, text) end
        items[#items + 1] = item
    end
    return items
end

local function positive_integer(text, what)
    local n = math.tointeger(tonumber(text))
    if not n or n < 1 then fail("%s expects a positive integer, got '%s'", what, tostring(text)) end
    return n
end

-- ---- command line ----------------------------------------------------------

local VALUE_OPTIONS = { grid = true, range = true, choice = true, random = true, seed = true,
                        jobs = true, out = true, name = true, metric = true }
-- Slurm: --slurm-<name> VALUE (machrt.sweep_slurm), and the flags.
local SLURM_VALUES = { ntasks = "count", ["cpus-per-task"] = "count", parallel = "count", time = "text",
                       partition = "text", mem = "text", gpus = "text", template = "text", sbatch = "list",
                       launcher = "text", task = "index" }
local FLAGS = { slurm = "slurm", submit = "submit", ["slurm-wait"] = "slurm_wait",
                ["slurm-results"] = "slurm_results" }

local function parse_range(spec, what)
    local parts = {}
    for p in (spec .. ":"):gmatch("([^:]*):") do parts[#parts + 1] = p end
    if #parts < 2 or #parts > 3 then fail("%s: expected LO:HI[:log|:lin|:int], got '%s'", what, spec) end
    local lo, hi, scale = tonumber(parts[1]), tonumber(parts[2]), parts[3] or "lin"
    if not lo then fail("%s: lower bound '%s' is not a number", what, parts[1]) end
    if not hi then fail("%s: upper bound '%s' is not a number", what, parts[2]) end
    if scale ~= "lin" and scale ~= "log" and scale ~= "int" then
        fail("%s: scale '%s' is not lin, log or int", what, scale)
    end
    if not (lo < hi) then
        fail("%s: the range %s..%s is empty (the lower bound must be below the upper)", what,
             parts[1], parts[2])
    end
    if scale == "log" and lo <= 0 then fail("%s: a log range needs a positive lower bound", what) end
    if scale == "int" and (not math.tointeger(lo) or not math.tointeger(hi)) then
        fail("%s: an int range needs integer bounds", what)
    end
    return { lo = lo, hi = hi, scale = scale }
end

--- Parses the sweep's command line. Arguments `--section.key=value` are
--- fixed overrides passed to every trial; the rest are the sweep's own.
function M.parse_args(args)
    local opts = { grid = {}, params = {}, fixed = {}, seed = 1, jobs = 1, metric = "f1",
                   slurm_opts = { sbatch = {} }, args = table.move(args, 1, #args, 1, {}) }
    local seen = {}
    local function axis(key, what)
        if not key:match("^[%w_]+%.[%w_]+$") then fail("%s: '%s' is not section.key", what, key) end
        if seen[key] then fail("%s: %s is swept twice", what, key) end
        seen[key] = true
    end
    local i = 1
    while i <= #args do
        local a = args[i]
        local name, value = a:match("^%-%-([%a_][%a_%-]*)=(.*)$")
        if not name then name = a:match("^%-%-([%a_][%a_%-]*)$") end
        local slurm = name and SLURM_VALUES[name:match("^slurm%-(.+)$") or ""]
        if a == "--help" or a == "-h" then
            opts.help = true
        elseif name and FLAGS[name] and value == nil then
            opts[FLAGS[name]] = true
        elseif slurm then
            if value == nil then
                i = i + 1
                value = args[i] or fail("--%s needs a value", name)
            end
            local key = name:match("^slurm%-(.+)$")
            if slurm == "count" then
                opts.slurm_opts[key] = positive_integer(value, "--" .. name)
            elseif slurm == "index" then
                opts.slurm_opts[key] = math.tointeger(tonumber(value))
                if not opts.slurm_opts[key] or opts.slurm_opts[key] < 0 then
                    fail("--%s expects an array task id (0, 1, ...), got '%s'", name, value)
                end
            elseif slurm == "list" then
                table.insert(opts.slurm_opts[key], value)
            else
                if value == "" then fail("--%s needs a value", name) end
                opts.slurm_opts[key] = value
            end
        elseif name and VALUE_OPTIONS[name] then
            if value == nil then
                i = i + 1
                value = args[i] or fail("--%s needs a value", name)
            end
            local what = "--" .. name .. " " .. value
            if name == "grid" or name == "choice" or name == "range" then
                local key, spec = value:match("^([^=]+)=(.*)$")
                if not key then fail("%s: expected KEY=%s", what, name == "range" and "LO:HI[:SCALE]" or "V1,V2,...") end
                axis(key, what)
                if name == "grid" then
                    opts.grid[#opts.grid + 1] = { key = key, values = split_list(spec, what), what = what }
                elseif name == "choice" then
                    opts.params[#opts.params + 1] = { key = key, values = split_list(spec, what), what = what }
                else
                    local r = parse_range(spec, what)
                    r.key, r.what = key, what
                    opts.params[#opts.params + 1] = r
                end
            elseif name == "random" or name == "jobs" then
                opts[name] = positive_integer(value, "--" .. name)
            elseif name == "seed" then
                opts.seed = math.tointeger(tonumber(value)) or fail("--seed expects an integer, got '%s'", value)
                if opts.seed < 0 then fail("--seed must not be negative, got %d", opts.seed) end
            elseif name == "metric" then
                local m = value:gsub("^val_", "")
                if not METRICS[m] then fail("--metric %s: choose f1 (val_f1), accuracy, roc_auc or loss", value) end
                opts.metric = m
            else
                opts[name] = value
            end
        elseif a:match("^%-%-[%w_]+[%w_%.]*=") then
            local path, text = a:match("^%-%-([%w_%.]+)=(.*)$")
            if path == "output_directory" or path == "experiment_name" then
                fail("the sweep sets --%s for each trial; use --out for the sweep folder", path)
            end
            opts.fixed[#opts.fixed + 1] = { path = path, text = text }
        elseif not a:match("^%-") and not opts.experiment then
            opts.experiment = a
        else
            fail("cannot read argument '%s' (see --help)", a)
        end
        i = i + 1
    end
    if opts.help then return opts end
    if not opts.experiment then fail("no experiment script given (see --help)") end
    if (opts.submit or opts.slurm_wait) and not opts.slurm then fail("--submit and --slurm-wait need --slurm") end
    if opts.slurm and opts.jobs > 1 then
        fail("--jobs is for local sweeps; on Slurm, --slurm-parallel P runs P trials at once")
    end
    if not exists(opts.experiment) then fail("experiment script '%s' not found", opts.experiment) end
    if #opts.grid > 0 and opts.random then fail("use --grid or --random, not both") end
    if #opts.params > 0 and not opts.random then fail("--range and --choice need --random N") end
    if opts.random and #opts.params == 0 then fail("--random needs at least one --range or --choice") end
    if #opts.grid == 0 and not opts.random then
        fail("nothing to sweep: give --grid KEY=V1,V2 or --random N with --range/--choice")
    end
    for _, f in ipairs(opts.fixed) do
        if seen[f.path] then fail("%s is both swept and fixed (--%s=%s)", f.path, f.path, f.text) end
    end
    -- Every trial gets the same environment.seed unless told otherwise: trials
    -- then differ only in what is swept, and a rerun draws the same numbers.
    local has_seed = false
    for _, f in ipairs(opts.fixed) do has_seed = has_seed or f.path == "environment.seed" end
    if not has_seed and not seen["environment.seed"] then
        opts.fixed[#opts.fixed + 1] = { path = "environment.seed", text = tostring(opts.seed) }
    end
    opts.name = opts.name or opts.experiment:match("([^/]+)$"):gsub("%.lua$", "")
    opts.out = (opts.out or ("runs/sweeps/" .. opts.name)):gsub("/$", "")
    return opts
end

-- ---- trials -----------------------------------------------------------------

-- A drawn number as text: 4 significant digits keep the CSV and the command
-- readable, and the experiment then runs exactly the value shown.
local function number_text(v)
    if math.type(v) == "integer" then return tostring(v) end
    return string.format("%.4g", v)
end

--- The trials of a sweep, in a fixed order (the first --grid axis varies
--- slowest; random trial t draws axis j from its own stream (seed, t, j), so
--- a rerun with the same seed draws the same values).
function M.trials(opts)
    local list = {}
    if #opts.grid > 0 then
        local function expand(axis, overrides)
            if axis > #opts.grid then
                list[#list + 1] = { overrides = overrides }
                return
            end
            for _, v in ipairs(opts.grid[axis].values) do
                local o = table.move(overrides, 1, #overrides, 1, {})
                o[#o + 1] = { path = opts.grid[axis].key, text = v }
                expand(axis + 1, o)
            end
        end
        expand(1, {})
    else
        for t = 1, opts.random do
            local overrides = {}
            for j, p in ipairs(opts.params) do
                local r = random.stream(opts.seed, t, j)
                local v
                if p.values then
                    v = p.values[r:integer(1, #p.values)]
                elseif p.scale == "int" then
                    v = number_text(r:integer(math.tointeger(p.lo), math.tointeger(p.hi)))
                elseif p.scale == "log" then
                    v = number_text(math.exp(r:uniform(math.log(p.lo), math.log(p.hi))))
                else
                    v = number_text(r:uniform(p.lo, p.hi))
                end
                overrides[#overrides + 1] = { path = p.key, text = v }
            end
            list[#list + 1] = { overrides = overrides }
        end
    end
    return list
end

--- The swept keys, in column order.
function M.keys(opts)
    local keys = {}
    for _, g in ipairs(opts.grid) do keys[#keys + 1] = g.key end
    for _, p in ipairs(opts.params) do keys[#keys + 1] = p.key end
    return keys
end

local function args_text(overrides)
    local parts = {}
    for _, o in ipairs(overrides) do parts[#parts + 1] = q("--" .. o.path .. "=" .. o.text) end
    return table.concat(parts, " ")
end

local function describe(overrides)
    local parts = {}
    for _, o in ipairs(overrides) do parts[#parts + 1] = o.path .. "=" .. o.text end
    return table.concat(parts, " ")
end

local function concat(...)
    local out = {}
    for _, l in ipairs{ ... } do table.move(l, 1, #l, #out + 1, out) end
    return out
end

-- ---- the experiment's resolved settings -----------------------------------------

-- The experiment's own `--help` prints every setting after the overrides are
-- applied, so one cheap call checks keys and values exactly as a run would
-- and tells the epochs and folds of a trial. Returns {["section.key"] = text}
-- or nil and the experiment's error message.
local function resolve(host, experiment, overrides)
    local cmd = string.format("%s %s %s --help 2>&1", q(host), q(experiment), args_text(overrides))
    local p = assert(io.popen(cmd))
    local text = p:read("a")
    local ok = p:close()
    if not ok then
        local msg = text:match("^machrt: (.-)\nstack traceback") or text:match("^machrt: (.-)%s*$") or text
        return nil, msg
    end
    local settings = {}
    for key, v in text:gmatch("\n  ([%w_%.]+) = ([^\n]*)") do settings[key] = v end
    if not next(settings) then return nil, "its --help printed no settings:\n" .. text end
    return settings
end

local function unknown_key_message(key, settings)
    local section = key:match("^([^.]+)%.")
    local in_section, sections = {}, {}
    for k in pairs(settings) do
        local s, name = k:match("^([^.]+)%.(.+)$")
        if s == section then in_section[#in_section + 1] = name end
        if s and not sections[s] then sections[s] = true; sections[#sections + 1] = s end
    end
    table.sort(in_section)
    table.sort(sections)
    if #in_section > 0 then
        return string.format("unknown key '%s'; valid keys in section '%s': %s", key, section,
                             table.concat(in_section, ", "))
    end
    return string.format("unknown key '%s': no section '%s'; sections: %s", key, section,
                         table.concat(sections, ", "))
end

-- ---- trial folders ------------------------------------------------------------

local function trial_dir(opts, i) return string.format("%s/trial_%03d", opts.out, i) end
local function trial_name(i) return string.format("trial_%03d", i) end
local function fold_dir(dir, fold) return string.format("%s/run/fold%s", dir, fold) end

local function log_rows(dir)
    local text = read(dir .. "/log.csv")
    if not text then return 0 end
    local _, n = text:gsub("\n", "")
    return n - 1 -- the header
end

local function fold_finished(dir, epochs)
    return exists(dir .. "/metrics.json") and log_rows(dir) >= epochs
end

local function finished(t)
    for _, fold in ipairs(t.folds) do
        if not fold_finished(fold_dir(t.dir, fold), t.epochs) then return false end
    end
    return true
end

local function read_json(path)
    local ok, v = pcall(sys.read_json, path)
    return ok and v or nil
end

local function same_overrides(a, b)
    if #a ~= #b then return false end
    for i = 1, #a do
        if a[i].path ~= b[i].path or a[i].text ~= b[i].text then return false end
    end
    return true
end

local function write_trial_json(t)
    sys.write_file(t.dir .. "/trial.json", sys.json_encode({
        trial = t.index, overrides = t.overrides, fixed = t.fixed, folds = t.folds,
        epochs = t.epochs, status = t.status, seconds = t.seconds, exit_code = t.exit_code,
    }, { indent = true }) .. "\n")
end

local function running_pid(dir)
    local pid = math.tointeger(tonumber(read(dir .. "/pid") or ""))
    if not pid or exists(dir .. "/exit_code") then return nil end
    if os.execute("kill -0 " .. pid .. " 2>/dev/null") then return pid end
    return nil
end

-- The last lines of a trial's output, for the report of a failure.
local function tail(path, n)
    local lines = {}
    for line in (read(path) or ""):gmatch("[^\n]+") do
        if not line:match("^\t") and line ~= "stack traceback:" then -- frames say nothing here
            lines[#lines + 1] = line
        end
    end
    return table.concat(lines, "\n", math.max(1, #lines - n + 1))
end

-- The shell command of one trial: resume each fold that has a checkpoint,
-- start the others fresh.
local function trial_command(opts, host, t, managed)
    local env = {}
    for _, o in ipairs(concat(t.fixed, managed)) do
        if o.path:match("^environment%.") and o.path ~= "environment.seed" then env[#env + 1] = o end
    end
    local cmds = {}
    local launcher = t.launcher and t.launcher .. " " or ""
    for _, fold in ipairs(t.folds) do
        local dir = fold_dir(t.dir, fold)
        if not fold_finished(dir, t.epochs) then
            if exists(dir .. "/checkpoint.safetensors") and exists(dir .. "/config.json")
                    and log_rows(dir) < t.epochs then
                cmds[#cmds + 1] = string.format("%s%s %s --resume %s %s", launcher, q(host),
                                                q(opts.experiment), q(dir), args_text(env))
            else
                -- Nothing to resume from (or a final checkpoint whose metrics
                -- were never written): a clean start, since the experiment
                -- would otherwise pick up whatever is in the folder.
                os.execute("rm -rf " .. q(dir))
                local folds = #t.folds > 1 and { { path = "dataset.folds", text = tostring(fold) } } or {}
                local all = concat(t.fixed, t.overrides, folds, {
                    { path = "output_directory", text = t.dir }, { path = "experiment_name", text = "run" },
                }, managed)
                cmds[#cmds + 1] = string.format("%s%s %s %s", launcher, q(host), q(opts.experiment),
                                                args_text(all))
            end
        end
    end
    return table.concat(cmds, " && ")
end

local function launch(opts, host, t, managed)
    sys.mkdir(t.dir)
    os.remove(t.dir .. "/exit_code")
    os.remove(t.dir .. "/pid")
    t.status = "running"
    write_trial_json(t)
    local cmd = trial_command(opts, host, t, managed)
    local ec = q(t.dir .. "/exit_code")
    -- The output log is appended to: a resumed trial keeps its earlier attempts.
    local script = string.format("{ echo \"== $(date '+%%F %%T') %s\"; %s; } >> %s 2>&1; "
                                 .. "echo $? > %s.tmp.$$ && mv %s.tmp.$$ %s",
                                 cmd:gsub("[\"\\$`]", "\\%0"), cmd, q(t.dir .. "/output.log"), ec, ec, ec)
    -- setsid: the trial gets its own process group, so the sweep can stop the
    -- whole trial (shell and experiment) if it is interrupted.
    local ok = os.execute(string.format("setsid sh -c %s </dev/null >/dev/null 2>&1 & echo $! > %s",
                                        q(script), q(t.dir .. "/pid")))
    if not ok then fail("could not start %s", t.name) end
    t.started = mt.clock()
end

local function stop(t)
    local pid = math.tointeger(tonumber(read(t.dir .. "/pid") or ""))
    if not pid then return end
    os.execute(string.format("kill -TERM -%d 2>/dev/null", pid))
    -- Waits (up to 2 s) for the trial to be gone, so that a rerun right after
    -- does not find it still running.
    for _ = 1, 20 do
        if not os.execute(string.format("kill -0 %d 2>/dev/null", pid)) then break end
        os.execute("sleep 0.1")
    end
    os.remove(t.dir .. "/pid")
end

-- ---- results ------------------------------------------------------------------

-- The mean of each metric over the trial's folds.
local function trial_metrics(t)
    local sums, counts = {}, {}
    for _, fold in ipairs(t.folds) do
        local m = read_json(fold_dir(t.dir, fold) .. "/metrics.json") or {}
        for _, k in ipairs(RESULT_COLUMNS) do
            local v = m[k]
            if type(v) == "number" and v == v then
                sums[k], counts[k] = (sums[k] or 0) + v, (counts[k] or 0) + 1
            end
        end
    end
    local out = {}
    for _, k in ipairs(RESULT_COLUMNS) do
        if counts[k] then out[k] = sums[k] / counts[k] end
    end
    return out
end

-- Records how a trial ended (its exit_code file is there) in trial.json.
local function finish_trial(opts, t, ntrials, clock0)
    local code = math.tointeger(tonumber(read(t.dir .. "/exit_code") or "")) or -1
    t.seconds, t.exit_code = mt.clock() - t.started, code
    os.remove(t.dir .. "/pid")
    if code == 0 and finished(t) then
        t.status = "ok"
        local m = trial_metrics(t)
        log.info("%s/%03d ok in %s: %s %s (sweep %s)", t.name, ntrials, log.fmt_seconds(t.seconds),
                 opts.metric, m[opts.metric] and string.format("%.4f", m[opts.metric]) or "n/a",
                 log.fmt_seconds(mt.clock() - clock0))
    else
        t.status = "failed"
        log.info("%s/%03d FAILED (exit status %d) in %s (sweep %s); the end of %s/output.log:\n%s",
                 t.name, ntrials, code, log.fmt_seconds(t.seconds), log.fmt_seconds(mt.clock() - clock0),
                 t.dir, tail(t.dir .. "/output.log", 6))
    end
    write_trial_json(t)
end

--- Runs one trial to its end in the foreground (a Slurm array task), its
--- experiment started through `launcher` (e.g. "mpirun -np 2") when given.
--- Returns true when it finished.
function M.run_trial(opts, host, t, ntrials, launcher)
    local clock0 = mt.clock()
    t.launcher = launcher
    launch(opts, host, t, {})
    log.info("%s/%03d start: %s", t.name, ntrials, describe(t.overrides))
    while not exists(t.dir .. "/exit_code") do
        local _, how = os.execute("sleep 0.2")
        if how == "signal" then
            stop(t)
            fail("interrupted; a resubmission resumes the trial")
        end
    end
    finish_trial(opts, t, ntrials, clock0)
    return t.status == "ok"
end

--- Orders trials best first by `metric` (loss ascending, the others
--- descending); failed trials and missing values last, then by trial number.
function M.sort(results, metric)
    local sign = metric == "loss" and 1 or -1
    table.sort(results, function(a, b)
        local va = a.status == "ok" and a.metrics[metric] or nil
        local vb = b.status == "ok" and b.metrics[metric] or nil
        if (va ~= nil) ~= (vb ~= nil) then return va ~= nil end
        if va ~= nil and va ~= vb then return sign * va < sign * vb end
        return a.index < b.index
    end)
    return results
end

local function write_results(opts, results)
    local data = require "machrt.data"
    local keys = M.keys(opts)
    local header = { "trial", "status" }
    for _, k in ipairs(keys) do header[#header + 1] = k end
    for _, k in ipairs(RESULT_COLUMNS) do header[#header + 1] = k end
    header[#header + 1] = "seconds"
    local csv_rows, shown = {}, {}
    for _, r in ipairs(results) do
        local row, show = { r.name, r.status }, { r.name, r.status }
        local value = {}
        for _, o in ipairs(r.overrides) do value[o.path] = o.text end
        for _, k in ipairs(keys) do row[#row + 1] = value[k] or ""; show[#show + 1] = value[k] or "" end
        for _, k in ipairs(RESULT_COLUMNS) do
            local v = r.metrics[k]
            row[#row + 1] = v and string.format("%.6g", v) or ""
            show[#show + 1] = v or ""
        end
        row[#row + 1] = r.seconds and string.format("%.1f", r.seconds) or ""
        show[#show + 1] = row[#row]
        csv_rows[#csv_rows + 1], shown[#shown + 1] = row, show
    end
    -- write_csv writes a temporary file and renames it: never a partial table.
    data.write_csv(opts.out .. "/results.csv", data.DataFrame.new(header, csv_rows, "results.csv"))
    return header, shown
end

-- ---- the sweep -------------------------------------------------------------------

local function cores()
    local p = io.popen("nproc 2>/dev/null")
    local n = p and math.tointeger(tonumber(p:read("l") or ""))
    if p then p:close() end
    return n or 1
end

local function has(list, path)
    for _, o in ipairs(list) do if o.path == path then return true end end
    return false
end

--- Resolves and checks every trial before any starts: keys, values, and
--- that the sweep folder holds this sweep and nothing still running.
--- Returns the trials ({index, name, dir, overrides, fixed, folds, epochs,
--- seconds, status = "ok" when finished earlier}) and those still to run.
--- With `shared` (array tasks) other processes run trials of the sweep at
--- the same time, on other hosts too: their pid files prove nothing here.
function M.prepare(opts, host, shared)
    local specs = M.trials(opts)

    -- Everything is checked before the first trial starts: keys, values, and
    -- that the sweep folder holds this sweep and nothing still running.
    local base, err = resolve(host, opts.experiment, opts.fixed)
    if not base then fail("the fixed overrides are rejected by %s: %s", opts.experiment, err) end
    for _, axis in ipairs(concat(opts.grid, opts.params)) do
        if base[axis.key] == nil then fail("%s: %s", axis.what, unknown_key_message(axis.key, base)) end
    end
    local trials = {}
    for i, s in ipairs(specs) do
        local t = { index = i, name = trial_name(i), dir = trial_dir(opts, i), overrides = s.overrides,
                    fixed = opts.fixed }
        local settings, why = resolve(host, opts.experiment, concat(opts.fixed, s.overrides))
        if not settings then fail("%s (%s): %s", t.name, describe(s.overrides), why) end
        t.epochs = math.tointeger(tonumber(settings["training.epochs"])) or 0
        t.folds = {}
        for f in (settings["dataset.folds"] or ""):gsub("^%[", ""):gsub("%]$", ""):gmatch("[^,%s]+") do
            t.folds[#t.folds + 1] = f
        end
        local saved = read_json(t.dir .. "/trial.json")
        if saved and not (same_overrides(saved.overrides or {}, t.overrides)
                          and same_overrides(saved.fixed or {}, t.fixed)) then
            fail("%s holds a trial with other settings (%s); use another --out, or remove the folder",
                 t.dir, describe(concat(saved.fixed or {}, saved.overrides or {})))
        end
        local pid = not shared and running_pid(t.dir)
        if pid then fail("%s is still running (pid %d) from an earlier sweep", t.dir, pid) end
        t.seconds, t.saved_status = saved and saved.seconds, saved and saved.status
        trials[i] = t
    end

    local to_run = {}
    for _, t in ipairs(trials) do
        if finished(t) then
            t.status = "ok"
            log.info("%s/%03d finished earlier, skipped (%s)", t.name, #trials, describe(t.overrides))
        else
            t.status = t.saved_status or "pending"
            to_run[#to_run + 1] = t
        end
    end
    return trials, to_run
end

M.quote, M.read_text, M.describe = q, read, describe

--- Runs the sweep; `host` is the machrt binary. Returns true when every
--- trial finished, false when some failed (the results are written either way).
function M.run(opts, host)
    local clock0 = mt.clock()
    local trials, to_run = M.prepare(opts, host)
    local specs = M.trials(opts)

    -- Threads split between the trials that run at once, unless set by hand.
    local jobs = math.min(opts.jobs, math.max(#to_run, 1))
    local managed = {}
    local user = concat(opts.fixed, specs[1] and specs[1].overrides or {})
    if jobs > 1 then
        if not has(user, "environment.threads") then
            managed[#managed + 1] = { path = "environment.threads", text = tostring(math.max(1, cores() // jobs)) }
        end
        if not has(user, "environment.number_of_workers") then
            managed[#managed + 1] = { path = "environment.number_of_workers", text = "1" }
        end
    end
    sys.mkdir(opts.out)
    log.info("sweep %s: %d trials, %d to run, %d at once%s -> %s", opts.name, #trials, #to_run, jobs,
             #managed > 0 and " (" .. describe(managed) .. " each)" or "", opts.out)

    local running, next_to_run = {}, 1
    local function finish(t) finish_trial(opts, t, #trials, clock0) end
    local ok, e = pcall(function()
        while next_to_run <= #to_run or next(running) do
            while #running < jobs and next_to_run <= #to_run do
                local t = to_run[next_to_run]
                next_to_run = next_to_run + 1
                launch(opts, host, t, managed)
                running[#running + 1] = t
                log.info("%s/%03d start: %s", t.name, #trials, describe(t.overrides))
            end
            local done = false
            for k = #running, 1, -1 do
                if exists(running[k].dir .. "/exit_code") then
                    finish(table.remove(running, k))
                    done = true
                end
            end
            if not done then
                local _, how = os.execute("sleep 0.1")
                if how == "signal" then fail("interrupted; a rerun resumes the unfinished trials") end
            end
        end
    end)
    if not ok then
        for _, t in ipairs(running) do stop(t) end
        error(e, 0)
    end

    return M.report(opts, host, trials, mt.clock() - clock0)
end

--- Writes results.csv from the trials' states and prints the table and the
--- best trial. Returns true when every trial finished.
function M.report(opts, host, trials, seconds)
    local results = {}
    for _, t in ipairs(trials) do
        results[#results + 1] = { index = t.index, name = t.name, status = t.status, overrides = t.overrides,
                                  metrics = t.status == "ok" and trial_metrics(t) or {}, seconds = t.seconds }
    end
    M.sort(results, opts.metric)
    local header, shown = write_results(opts, results)
    log.info("sweep %s: %d trials%s, sorted by %s; %s/results.csv", opts.name, #trials,
             seconds and " in " .. log.fmt_seconds(seconds) or "", opts.metric, opts.out)
    log.table(header, shown)

    local failed = 0
    for _, r in ipairs(results) do if r.status ~= "ok" then failed = failed + 1 end end
    local best = results[1]
    if best and best.status == "ok" then
        log.info("best: %s, %s %.4f (%s)", best.name, opts.metric, best.metrics[opts.metric] or 0 / 0,
                 describe(best.overrides))
        log.stream:write("  ", q(host), " ", q(opts.experiment), " ",
                         args_text(concat(opts.fixed, best.overrides)), "\n")
    end
    if failed > 0 then log.info("%d of %d trials failed (see their output.log)", failed, #trials) end
    return failed == 0
end

return M
