-- Run folders (runs/<experiment_name>/fold<k>): one run per folder, never
-- two at once, and never an old run continued or replaced by accident.
--
--   local run_folder = require "machrt.run_folder"
--   run_folder.check_name(cfg.experiment_name, "experiment_name")
--   local folder = run_folder.open(dir, "fresh" | "resume" | "overwrite")
--   local saved = run_folder.read_config(dir, defaults)   -- config.json, checked
--   run_folder.differences(a, b) -> {{key =, a =, b =}, ...} (environment.*, training.epochs left out)
--   run_folder.before_write(dir)   -- train.save_checkpoint / save_best / build_scorer call it
--   run_folder.write_config(dir, text)   -- deferred while an --overwrite is pending
--   run_folder.config_text(dir)   -- the config a checkpoint records (kept from write_config)
--   run_folder.seal(tensors, meta); run_folder.verify(path, tensors, meta)   -- checkpoint checksums
--   run_folder.intact(tensors, meta)   -- the same check as a boolean (the disk wave cache)
--   run_folder.check_trained_config(config_path, checkpoint_path, meta, cfg[, keys])   -- edited since?
--   run_folder.fill_absent(stored, template, keys, where)   -- settings a run predates (schema's before)
--   run_folder.remove_stale_temporaries(dir)   -- what killed writers left (resume, the disk cache)
--
-- open() locks the folder (run.lock, an flock held until the process ends)
-- and then:
--   fresh      refuses a folder that holds anything (a run, or its remains),
--              naming --resume and --overwrite;
--   resume     removes the temporary files (*.tmp.<pid>.<n>) of processes that
--              are gone (a killed run leaves them behind);
--   overwrite  keeps the old files until the new run writes its first
--              checkpoint: before_write() then removes them and writes the
--              new config.json, so a new run that fails early leaves the old
--              run whole.

local mt = require "machrt"
local sys = require "machrt.sys"
local log = require "machrt.log"
local config = require "machrt.config"

local M = {}

M.LOCK = "run.lock"
M.CONFIG = "config.json"
-- log.csv: one row per epoch of the run history, these fields in this order
-- (train.write_log writes it, the interpretation page shows it).
M.LOG = "log.csv"
M.LOG_COLUMNS = { "epoch", "step", "lr", "train_loss", "val_loss", "val_f1", "val_accuracy",
                  "val_roc_auc", "seconds", "samples_per_second" }

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

-- The folders this process holds: dir -> {lock =, mode =, pending_config =}.
local held = {}
-- The config.json text this process wrote (or will write) per folder: a
-- checkpoint records it every epoch without reading the file back.
local configs = {}

local function strip(dir) return (dir:gsub("/+$", "")) end

-- The value of `by` for `dir` or the nearest folder holding it (a model's
-- folder inside a run folder), or nil.
local function nearest(by, dir)
    dir = strip(dir)
    while dir do
        if by[dir] then return by[dir] end
        dir = dir:match("^(.+)/[^/]+$")
    end
    return nil
end

--- Refuses a name that is not one path component: it would put the run
--- folder outside output_directory, or into it.
function M.check_name(name, key)
    if type(name) ~= "string" or name == "" or name == "." or name == ".." or name:find("/", 1, true)
            or name:find("%z") then
        fail("%s must be a single folder name (no '/', not '.' or '..'), got '%s'", key, tostring(name))
    end
end

--- Removes the temporary files of writers that are gone: "<name>.tmp.<pid>.<n>"
--- (mrt_sys_temp_name: sys.write_file, mt.save, plot, audio.save) and
--- "<name>.tmp.<pid>" (earlier versions), in `dir` and below. For a folder
--- this process has written nothing into yet, so a name with its own PID (a
--- reused PID) is stale too: a resumed run folder (whose lock keeps other
--- runs out), the disk wave cache when a run opens it (where other live
--- runs' files stay). One removed meanwhile by another process is no error.
function M.remove_stale_temporaries(dir)
    local removed = {}
    local function walk(path)
        for _, name in ipairs(sys.list_folder(path)) do
            local full = path .. "/" .. name
            local st = sys.stat(full)
            if st and st.is_dir then
                walk(full)
            else
                local pid = math.tointeger(tonumber(name:match("%.tmp%.(%d+)$") or name:match("%.tmp%.(%d+)%.%d+$")))
                if pid and (pid == sys.pid() or not sys.process_alive(pid)) then
                    local ok, err = os.remove(full)
                    if ok then
                        removed[#removed + 1] = full
                    elseif sys.stat(full) then
                        fail("cannot remove the stale temporary file %s: %s", full, err)
                    end
                end
            end
        end
    end
    walk(dir)
    if #removed > 0 then
        log.info("removed %d temporary file(s) left by processes that are gone: %s", #removed,
                 table.concat(removed, ", "))
    end
end

local function remove_tree(path)
    local st = sys.stat(path)
    if st and st.is_dir then
        for _, name in ipairs(sys.list_folder(path)) do remove_tree(path .. "/" .. name) end
    end
    local ok, err = os.remove(path)
    if not ok then fail("--overwrite: cannot remove %s: %s", path, err) end
end

-- The entries of a run folder besides its lock file.
local function contents(dir)
    local names = {}
    for _, name in ipairs(sys.list_folder(dir)) do
        if name ~= M.LOCK then names[#names + 1] = name end
    end
    return names
end

--- Locks `dir` (created if missing) for this process and applies `mode`.
--- Returns {dir =, mode =}.
function M.open(dir, mode)
    dir = strip(dir)
    if held[dir] then return held[dir] end
    if mode == "resume" then
        local st = sys.stat(dir)
        if not st or not st.is_dir then fail("--resume %s: no such run folder", dir) end
    else
        sys.mkdir(dir)
    end
    local lock, holder = sys.lock(dir .. "/" .. M.LOCK)
    if not lock then
        fail("run folder %s is in use by %s (it holds the lock %s/%s): wait for that run to end, "
             .. "or choose another experiment_name or output_directory", dir,
             holder > 0 and "process " .. holder or "another process", dir, M.LOCK)
    end
    local folder = { dir = dir, mode = mode, lock = lock }
    local present = contents(dir)
    if mode == "fresh" and #present > 0 then
        lock:release()
        fail("run folder %s already holds a run (%s): continue it with --resume %s, start it again "
             .. "with --overwrite (the old files are removed when the new run writes its first "
             .. "checkpoint), or choose another experiment_name", dir, table.concat(present, ", "), dir)
    elseif mode == "resume" then
        M.remove_stale_temporaries(dir)
    elseif mode == "overwrite" then
        folder.pending = #present > 0
        if folder.pending then
            log.info("--overwrite: the old run in %s is removed when this run writes its first checkpoint", dir)
        end
    elseif mode ~= "fresh" then
        fail("run_folder.open: mode must be fresh, resume or overwrite, got '%s'", tostring(mode))
    end
    held[dir] = folder
    return folder
end

--- Writes config.json, or, while an --overwrite is pending, keeps it for
--- before_write (the old run's config stays with the old run's files).
function M.write_config(dir, text)
    dir = strip(dir)
    configs[dir] = text
    local folder = held[dir]
    if folder and folder.pending then
        folder.pending_config = text
        return
    end
    sys.mkdir(dir)
    sys.write_file(dir .. "/" .. M.CONFIG, text)
end

-- The held run folder that is `dir` or holds it (a model's folder inside a
-- run folder), or nil.
local function holder_of(dir) return nearest(held, dir) end

--- The config.json of the run folder that is `dir` or holds it.
function M.config_path(dir)
    local folder = holder_of(dir)
    return (folder and folder.dir or strip(dir)) .. "/" .. M.CONFIG
end

--- The config.json text of the run folder that is `dir` or holds it: what
--- write_config was given, else the file's (nil when there is none).
function M.config_text(dir)
    return nearest(configs, dir) or sys.read_file(M.config_path(dir))
end

--- Called before the first file of a new run's results is written (into the
--- run folder or a folder inside it): a pending --overwrite removes the old
--- files now and writes the new config.
function M.before_write(dir)
    local folder = holder_of(dir)
    if not folder or not folder.pending then return end
    folder.pending = false
    local old = contents(folder.dir)
    for _, name in ipairs(old) do remove_tree(folder.dir .. "/" .. name) end
    log.info("--overwrite: removed the old run's files from %s (%s)", folder.dir, table.concat(old, ", "))
    if folder.pending_config then sys.write_file(folder.dir .. "/" .. M.CONFIG, folder.pending_config) end
end

-- ---- configs ----------------------------------------------------------------

-- A section is a table with named keys; a list value is not one.
local function is_section(v) return type(v) == "table" and v[1] == nil and next(v) ~= nil end

local function kind_of(v)
    if type(v) == "table" then return "list" end
    if math.type(v) == "integer" then return "integer" end
    return type(v)
end

-- Whether a stored value can stand where the default stands.
local function fits(value, default)
    local want, got = kind_of(default), kind_of(value)
    if want == "list" then
        -- An empty list is written as [] and read back as an empty table.
        if type(value) ~= "table" or is_section(value) then return false end
        for _, x in ipairs(value) do
            if type(x) == "table" then return false end
        end
        return true
    end
    if want == "number" then return got == "number" or got == "integer" end
    return want == got
end

local show = config.shown
M.show = show

--- Reads a run folder's config.json and checks each value against the
--- experiment's defaults (known key, same type), naming the file and the
--- key. Returns the stored table.
function M.read_config(dir, defaults)
    local path = strip(dir) .. "/" .. M.CONFIG
    if not sys.stat(path) then
        fail("--resume %s: no %s there (is it a run folder runs/<experiment>/fold<k>?)", dir, M.CONFIG)
    end
    local saved = sys.read_json(path)
    if type(saved) ~= "table" or (next(saved) ~= nil and saved[1] ~= nil) then
        fail("%s: not a config (a JSON object of sections)", path)
    end
    for name, v in pairs(saved) do
        local default = defaults[name]
        if default == nil then
            fail("%s: unknown key '%s' (not a setting of this experiment)", path, name)
        elseif is_section(default) then
            if type(v) ~= "table" or (next(v) ~= nil and not is_section(v)) then
                fail("%s: '%s' must be a section (a JSON object), got %s", path, name, show(v))
            end
            for key, x in pairs(v) do
                if default[key] == nil then
                    fail("%s: unknown key '%s.%s'; valid keys of %s: see --help", path, name, key, name)
                end
                if not fits(x, default[key]) then
                    fail("%s: %s.%s must be a %s (as its default %s), got %s %s", path, name, key,
                         kind_of(default[key]), show(default[key]), type(x), show(x))
                end
            end
        elseif not fits(v, default) then
            fail("%s: %s must be a %s (as its default %s), got %s %s", path, name, kind_of(default),
                 show(default), type(v), show(v))
        end
    end
    return saved
end

-- Settings a resumed run may change: where and how fast it runs, and how
-- long (a finished run extended by more epochs).
function M.resumable(key)
    return key:match("^environment%.") ~= nil or key == "training.epochs"
end

--- Fills the settings of `template` (an experiment's defaults, or the config
--- a run resumes with) that a stored config lacks (config.json, or the
--- settings a checkpoint records) because the run was written before machrt
--- had them: each gets its schema's `before`, the value that reproduces what
--- that run did (audio.resampler: soxr), and is returned as {key =, value =},
--- sorted by key. A lacking key with no `before` is refused, naming it and
--- `where` (the file): today's default could train another model. The
--- resumable ones (environment.*, training.epochs) are left to the command
--- line and the defaults, as are keys with no spec (the experiment's
--- mistake, which config.validate names).
function M.fill_absent(stored, template, keys, where)
    keys = keys or require("machrt.schema").reference
    local filled = {}
    local function fill(path, holder, key)
        if holder[key] ~= nil or M.resumable(path) or not keys[path] then return end
        local before = keys[path].before
        if before == nil then
            fail("%s has no setting %s: the run was written before machrt had it, and no value is "
                 .. "known to reproduce what it did; start the run again with --overwrite", where, path)
        end
        holder[key] = config.copy(before)
        filled[#filled + 1] = { key = path, value = before }
    end
    for name, default in pairs(template) do
        if is_section(default) then
            local section = stored[name] or {}
            if type(section) == "table" then
                for key in pairs(default) do fill(name .. "." .. key, section, key) end
                if stored[name] == nil and next(section) ~= nil then stored[name] = section end
            end
        else
            fill(name, stored, name)
        end
    end
    table.sort(filled, function(p, q) return p.key < q.key end)
    return filled
end

local function same(a, b)
    if type(a) == "table" and type(b) == "table" then
        if #a ~= #b then return false end
        for i = 1, #a do
            if not same(a[i], b[i]) then return false end
        end
        return true
    end
    if type(a) == "number" and type(b) == "number" then return a == b end
    return a == b
end

--- The settings in which configs a and b differ, as {key = "section.key",
--- a =, b =}, sorted by key; the resumable ones (environment.*,
--- training.epochs) left out.
function M.differences(a, b)
    local out = {}
    local function visit(key, x, y)
        if M.resumable(key) then return end
        if is_section(x) or is_section(y) then
            local keys = {}
            for k in pairs(type(x) == "table" and x or {}) do keys[k] = true end
            for k in pairs(type(y) == "table" and y or {}) do keys[k] = true end
            for k in pairs(keys) do
                visit(key .. "." .. k, type(x) == "table" and x[k] or nil, type(y) == "table" and y[k] or nil)
            end
        elseif not same(x, y) then
            out[#out + 1] = { key = key, a = x, b = y }
        end
    end
    local keys = {}
    for k in pairs(a) do keys[k] = true end
    for k in pairs(b) do keys[k] = true end
    for k in pairs(keys) do visit(k, a[k], b[k]) end
    table.sort(out, function(p, q) return p.key < q.key end)
    return out
end

--- Refuses a config that differs from the one a checkpoint was trained
--- under (its machrt.config metadata) in more than environment.* and
--- training.epochs. Settings the checkpoint predates are filled as
--- fill_absent does (keys: the experiment's schema, default
--- machrt.schema.reference). Returns the trained config, or nil when the
--- checkpoint has none.
function M.check_trained_config(config_path, checkpoint_path, meta, cfg, keys)
    if not meta["machrt.config"] then return nil end
    local trained = sys.json_decode(meta["machrt.config"], checkpoint_path .. " (config)")
    if type(trained) == "table" then
        M.fill_absent(trained, cfg, keys, string.format("checkpoint %s (the settings it was trained under)",
                                                         checkpoint_path))
    end
    local changed = M.differences(trained, cfg)
    if #changed > 0 then
        local c = changed[1]
        fail("%s was changed after checkpoint %s was written: %s is %s there, %s in the "
             .. "checkpoint's settings", config_path, checkpoint_path, c.key, show(c.b), show(c.a))
    end
    return trained
end

-- ---- checksums ------------------------------------------------------------------

M.CHECKSUM = "machrt.checksum"

local function without_checksum(meta)
    local rest = {}
    for k, v in pairs(meta or {}) do
        if k ~= M.CHECKSUM then rest[k] = v end
    end
    return rest
end

--- The checksum of a checkpoint's tensors and metadata (mt.checksum, the
--- checksum entry itself left out).
function M.checksum(tensors, meta)
    return mt.checksum(tensors, without_checksum(meta))
end

--- Adds the checksum to `meta` (before mt.save).
function M.seal(tensors, meta)
    meta[M.CHECKSUM] = M.checksum(tensors, meta)
    return meta
end

--- Whether a sealed file's tensors and metadata are what was written (a
--- cache decides with it whether to use a file or make it again).
function M.intact(tensors, meta)
    local want = meta and meta[M.CHECKSUM]
    return want ~= nil and M.checksum(tensors, meta) == want
end

--- Refuses a file whose tensors or metadata are not what was written.
function M.verify(path, tensors, meta)
    local want = meta and meta[M.CHECKSUM]
    if not want then
        fail("%s has no checksum (%s metadata): it was not written by this version of machrt, "
             .. "so it cannot be verified", path, M.CHECKSUM)
    end
    local got = M.checksum(tensors, meta)
    if got ~= want then
        fail("%s is damaged or was edited: its tensors and metadata give checksum %s, the file "
             .. "says %s", path, got, want)
    end
end

return M
