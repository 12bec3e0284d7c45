-- Sweeps as Slurm job arrays (scripts/sweep.lua --slurm): one array task
-- per trial of the same sweep spec, the trials and their folders exactly
-- those of a local sweep (machrt.sweep), so results.csv reads the same.
--
-- `--slurm` writes <out>/sweep.sbatch; `--submit` also runs sbatch on it,
-- with --array listing only the unfinished trials. Array task i runs trial
-- i + 1 (`--slurm-task i`, trial_001 is task 0), then rewrites results.csv
-- from every trial folder (`--slurm-results`) under flock(1): tasks that end
-- together on several nodes never interleave their writes, and the last to
-- finish writes the complete table.
local mt = require "machrt"
local sys = require "machrt.sys"
local log = require "machrt.log"
local sweep = require "machrt.sweep"

local M = {}

local q, read = sweep.quote, sweep.read_text

local function fail(fmt, ...) error("sweep: " .. string.format(fmt, ...), 0) end

local function absolute(path)
    if path:sub(1, 1) == "/" then return path end
    local p = assert(io.popen("pwd -P"))
    local cwd = p:read("l")
    p:close()
    path = path:gsub("^%./", "")
    return path == "." and cwd or cwd .. "/" .. path
end

-- "0-3", "0,2-3": Slurm's --array list of the 0-based task ids.
function M.array_spec(ids)
    local parts, k = {}, 1
    while k <= #ids do
        local j = k
        while j < #ids and ids[j + 1] == ids[j] + 1 do j = j + 1 end
        parts[#parts + 1] = j > k and (ids[k] .. "-" .. ids[j]) or tostring(ids[k])
        k = j + 1
    end
    return table.concat(parts, ",")
end

-- The sweep's own arguments for the array tasks: the same spec, without
-- what only the submission needs.
local SUBMIT_ONLY = { ["--slurm"] = true, ["--submit"] = true, ["--slurm-wait"] = true }
local function task_args(opts)
    local out = {}
    for _, a in ipairs(opts.args) do
        if not SUBMIT_ONLY[a] then out[#out + 1] = q(a) end
    end
    return table.concat(out, " ")
end

-- --slurm-<name> options written as #SBATCH --<name>=<value>.
local RESOURCES = { "ntasks", "cpus-per-task", "time", "partition", "mem", "gpus" }

--- The text of the job-array script for the trials `to_run`.
function M.script(opts, host, script_path, trials, to_run)
    local s = opts.slurm_opts
    local ids = {}
    for _, t in ipairs(to_run) do ids[#ids + 1] = t.index - 1 end
    local out = absolute(opts.out)
    local lines = {
        "#!/bin/sh",
        "#SBATCH --job-name=" .. ("sweep-" .. opts.name):gsub("[^%w_%-%.]", "_"),
        string.format("#SBATCH --array=%s%%%d", M.array_spec(ids), math.min(s.parallel or #ids, #ids)),
        "#SBATCH --output=" .. out .. "/slurm/task_%a.out",
    }
    for _, name in ipairs(RESOURCES) do
        if s[name] then lines[#lines + 1] = string.format("#SBATCH --%s=%s", name, s[name]) end
    end
    for _, extra in ipairs(s.sbatch) do lines[#lines + 1] = "#SBATCH " .. extra end
    if s.template then
        local text = read(s.template) or fail("--slurm-template %s: cannot read the file", s.template)
        lines[#lines + 1] = text:gsub("%s+$", "")
    end
    local cmd = string.format("%s %s %s", q(host), q(script_path), task_args(opts))
    for _, line in ipairs{
        string.format("# %d trials of sweep %s; array task i runs trial i + 1 (trial_001 is task 0).",
            #trials, opts.name),
        "cd " .. q(absolute(".")) .. " || exit 1",
        cmd .. ' --slurm-task="$SLURM_ARRAY_TASK_ID"',
        "status=$?",
        "# results.csv from every trial folder, one task at a time.",
        "flock " .. q(out .. "/.results.lock") .. " " .. cmd .. " --slurm-results >/dev/null",
        "exit $status",
    } do lines[#lines + 1] = line end
    return table.concat(lines, "\n") .. "\n"
end

-- --slurm [--submit]: write the script (and submit it).
local function write_and_submit(opts, host, script_path)
    local trials, to_run = sweep.prepare(opts, host)
    sys.mkdir(opts.out)
    sys.mkdir(opts.out .. "/slurm")
    if #to_run == 0 then
        log.info("sweep %s: all %d trials finished earlier; nothing to submit", opts.name, #trials)
        return sweep.report(opts, host, trials)
    end
    local path = opts.out .. "/sweep.sbatch"
    sys.write_file(path, M.script(opts, host, script_path, trials, to_run))
    log.info("sweep %s: %d trials, %d to run as a Slurm job array -> %s", opts.name, #trials, #to_run, path)
    if not opts.submit then
        log.info("submit it with: sbatch %s", path)
        return true
    end
    local cmd = string.format("sbatch --parsable%s %s 2>&1", opts.slurm_wait and " --wait" or "", q(path))
    local p = assert(io.popen(cmd))
    local text = p:read("a")
    local ok, _, code = p:close()
    local job = text:match("^(%d+)")
    if not job then fail("sbatch failed (exit status %s):\n%s", tostring(code), text) end
    sys.write_file(opts.out .. "/slurm/job_id", job .. "\n")
    log.info("submitted job array %s (sbatch); task output in %s/slurm/", job, opts.out)
    if opts.slurm_wait then
        local again = sweep.prepare(opts, host, true)
        local done = sweep.report(opts, host, again)
        if not ok then log.info("the job array %s ended with exit status %s", job, tostring(code)) end
        return done and ok
    end
    return true
end

-- --slurm-task I: run trial I + 1 here.
local function run_task(opts, host)
    local trials = sweep.prepare(opts, host, true)
    local id = opts.slurm_opts.task
    local t = trials[id + 1]
    if not t then fail("--slurm-task %d: the sweep has %d trials (tasks 0..%d)", id, #trials, #trials - 1) end
    if t.status == "ok" then return true end
    local n = opts.slurm_opts.ntasks
    local launcher = opts.slurm_opts.launcher or (n and n > 1 and "mpirun -np " .. n) or nil
    return sweep.run_trial(opts, host, t, #trials, launcher)
end

--- scripts/sweep.lua's entry point when --slurm, --slurm-task or
--- --slurm-results is given. Returns true on success.
function M.main(opts, host, script_path)
    if opts.slurm_opts.task then return run_task(opts, host) end
    if opts.slurm_results then
        sweep.report(opts, host, (sweep.prepare(opts, host, true)))
        return true
    end
    return write_and_submit(opts, host, script_path)
end

--- True when the options ask for the Slurm side.
function M.wanted(opts)
    return opts.slurm or opts.slurm_results or opts.slurm_opts.task ~= nil
end

return M
