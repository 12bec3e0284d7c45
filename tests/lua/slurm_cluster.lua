-- A real single-host Slurm for the tests (loaded with `require
-- "slurm_cluster"`): munged, slurmctld and slurmd on this host, with every
-- file (key, sockets, state, spool, logs, slurm.conf) in one folder and
-- ports of their own, so it never touches a system Slurm or another test's.
--
--   local cluster, why = require("slurm_cluster").start(dir)
--   -- cluster.env: "SLURM_CONF=..." to put before sbatch/squeue commands
--   cluster:stop()
--
-- start returns nil and the reason (with the daemons' logs) when they
-- cannot be started.
local M = {}

local function sh(cmd)
    local p = assert(io.popen("{ " .. cmd .. "\n} 2>&1"))
    local out = p:read("a")
    local ok = p:close()
    return ok, out
end

local function read(path)
    local f = io.open(path, "rb")
    if not f then return "" end
    local s = f:read("a")
    f:close()
    return s
end

local function line(cmd)
    local _, out = sh(cmd)
    return (out:match("^%s*(.-)%s*$"))
end

-- A daemon in the foreground of its own session: its pid is the process
-- group to stop.
local function spawn(cmd, logfile)
    return math.tointeger(tonumber(line(string.format("setsid sh -c 'exec %s' >%s 2>&1 </dev/null & echo $!",
        cmd, logfile))))
end

-- A zombie (exited, not yet reaped by whoever inherited it) is not alive.
local function alive(pid)
    local stat = pid and read("/proc/" .. pid .. "/stat")
    return stat and stat ~= "" and not stat:match("^%d+ %b() Z")
end

local Cluster = {}
Cluster.__index = Cluster

function Cluster:stop()
    for k = #self.pids, 1, -1 do
        local pid = self.pids[k]
        os.execute(string.format("kill -TERM -%d 2>/dev/null", pid))
        for _ = 1, 50 do
            if not alive(pid) then break end
            os.execute("sleep 0.1")
        end
        if alive(pid) then os.execute(string.format("kill -KILL -%d 2>/dev/null", pid)) end
    end
    self.pids = {}
end

function Cluster:logs()
    local parts = {}
    for _, name in ipairs{ "munged", "slurmctld", "slurmd" } do
        parts[#parts + 1] = "== " .. name .. ".log\n" .. read(self.dir .. "/" .. name .. ".log"):sub(-1500)
    end
    return table.concat(parts, "\n")
end

local CONF = [[
ClusterName=machrttest
SlurmctldHost=%s(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=%s/munge.sock
CredType=cred/munge
SlurmctldPort=%d
SlurmdPort=%d
StateSaveLocation=%s/state
SlurmdSpoolDir=%s/spool
SlurmctldPidFile=%s/slurmctld.pid
SlurmdPidFile=%s/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_min_interval=100000
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=%s NodeAddr=127.0.0.1 CPUs=%d State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
]]

local function start_once(dir, port)
    local c = setmetatable({ dir = dir, pids = {} }, Cluster)
    local host, cpus = line("hostname -s"), math.tointeger(tonumber(line("nproc"))) or 1
    os.execute(string.format("rm -rf %s/state %s/spool && mkdir -p %s/state %s/spool", dir, dir, dir, dir))
    local f = assert(io.open(dir .. "/slurm.conf", "w"))
    f:write(CONF:format(host, dir, port, port + 1, dir, dir, dir, dir, host, cpus))
    f:close()
    c.env = "SLURM_CONF=" .. dir .. "/slurm.conf"
    c.pids[1] = spawn(string.format("/usr/sbin/munged --foreground --force --socket=%s/munge.sock "
        .. "--key-file=%s/munge.key --pid-file=%s/munged.pid --seed-file=%s/munge.seed --log-file=%s/munged.log",
        dir, dir, dir, dir, dir), dir .. "/munged.out")
    for _ = 1, 50 do
        if read(dir .. "/munged.pid") ~= "" then break end
        os.execute("sleep 0.1")
    end
    c.pids[2] = spawn(string.format("env %s /usr/sbin/slurmctld -D -c", c.env), dir .. "/slurmctld.log")
    c.pids[3] = spawn(string.format("env %s /usr/sbin/slurmd -D", c.env), dir .. "/slurmd.log")
    for _ = 1, 200 do
        if line(c.env .. " sinfo -h -o %T 2>/dev/null"):match("^idle") then return c end
        for k = 1, 3 do
            if not alive(c.pids[k]) then
                local logs = c:logs()
                c:stop()
                return nil, "a daemon exited at start-up:\n" .. logs
            end
        end
        os.execute("sleep 0.1")
    end
    local logs = c:logs()
    c:stop()
    return nil, "the node did not become idle within 20 s:\n" .. logs
end

function M.start(dir)
    for _, bin in ipairs{ "/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch" } do
        if not io.open(bin) then return nil, bin .. " is not installed (make deps-dist installs slurm-wlm and munge)" end
    end
    if line("id -u") ~= "0" then return nil, "slurmd needs root on a single host" end
    local ok, out = sh(string.format("dd if=/dev/urandom of=%s/munge.key bs=128 count=1 2>/dev/null && "
        .. "chmod 600 %s/munge.key", dir, dir))
    if not ok then return nil, "cannot write a munge key: " .. out end
    -- Ports of its own, away from Slurm's 6817/6818: a busy port is tried again.
    math.randomseed(os.time(), math.floor(os.clock() * 1e6))
    local why
    for _ = 1, 3 do
        local c
        c, why = start_once(dir, 20000 + 2 * math.random(0, 10000))
        if c then return c end
    end
    return nil, why
end

return M
