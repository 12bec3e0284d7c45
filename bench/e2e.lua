-- The default experiment end to end against PyTorch: `machrt
-- experiments/resnet34.lua` with its default config (what `make run` runs)
-- and bench/peers/e2e_resnet34.py, the same recipe in PyTorch 2.x on the
-- same corpus, each under /usr/bin/time -v. One table: wall time, peak RSS,
-- final validation F1, and the ratios against the goal (1.5x faster, no
-- more memory). Run through `make bench`.
--
--   ./machrt bench/e2e.lua [--epochs N] [--skip-peer] [--data FOLDER]
--
-- --epochs (or $BENCH_E2E_EPOCHS) runs fewer than the config's 5 epochs for
-- a quicker figure; the table says so. --data runs both on another corpus
-- in the synthetic corpus's layout (FOLDER/dataset.csv; made when missing). The run folder and the peer's
-- checkpoints go to a temporary folder under build/bench/ (removed after);
-- machrt's profile.json of the run is printed with the table. The peer runs
-- under $PEERS_PYTHON (torch, torchaudio, torchvision, scikit-learn); without
-- it, it is skipped with a line that says so. The machine's load (uptime)
-- is printed next to each figure: on a shared machine it moves them, so
-- the CPU seconds (user + system, workers included) are given too: they
-- move less with the load than the wall time does.
local sys = require "machrt.sys"
local synth = require "machrt.synth"
local cpuinfo = require "machrt.cpuinfo"

local function fail(fmt, ...) error(string.format("e2e: " .. fmt, ...), 0) end

local epochs = tonumber(os.getenv("BENCH_E2E_EPOCHS") or "")
local skip_peer, data = false, "data/synthetic"
local i = 1
while i <= #arg do
    if arg[i] == "--epochs" then
        epochs = math.tointeger(tonumber(arg[i + 1] or ""))
        if not epochs or epochs < 1 then fail("--epochs needs a positive integer") end
        i = i + 2
    elseif arg[i] == "--skip-peer" then
        skip_peer, i = true, i + 1
    elseif arg[i] == "--data" and arg[i + 1] then
        data, i = arg[i + 1], i + 2
    else
        fail("unknown argument '%s' (--epochs N, --skip-peer, --data FOLDER)", tostring(arg[i]))
    end
end
local DEFAULT_EPOCHS = 5 -- experiments/resnet34.lua's training.epochs

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function read(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local text = f:read("a")
    f:close()
    return text
end

local function uptime()
    local p = io.popen("uptime")
    local line = p and p:read("l") or "?"
    if p then p:close() end
    return (line:gsub("^%s+", ""))
end

if not os.execute("/usr/bin/time -v true >/dev/null 2>&1") then
    fail("/usr/bin/time (GNU time, Debian package 'time') is needed: `make bench` installs it "
         .. "(scripts/deps.sh bench)")
end

-- Runs cmd under /usr/bin/time -v with its output in log; returns the wall
-- seconds and peak RSS (bytes) time measured, or fails naming the log.
local function timed(name, cmd, log)
    local before = uptime()
    print(string.format("%s: %s\n  load before: %s", name, cmd, before))
    io.stdout:flush()
    local ok = os.execute(string.format("/usr/bin/time -v -o %s %s > %s 2>&1", shell_quote(log .. ".time"),
                                        cmd, shell_quote(log)))
    local after = uptime()
    print("  load after:  " .. after)
    if not ok then fail("%s failed; its output is in %s", name, log) end
    local t = read(log .. ".time") or ""
    local kb = tonumber(t:match("Maximum resident set size %(kbytes%): (%d+)"))
    local clock = t:match("Elapsed %(wall clock%) time %(h:mm:ss or m:ss%): ([%d:%.]+)")
    local wall = 0
    for part in (clock or ""):gmatch("[^:]+") do wall = wall * 60 + tonumber(part) end
    local cpu = (tonumber(t:match("User time %(seconds%): ([%d.]+)")) or 0)
        + (tonumber(t:match("System time %(seconds%): ([%d.]+)")) or 0)
    return { wall = wall, cpu = cpu, rss = kb and kb * 1024, load_before = before, load_after = after }
end

local _, _, cpu_flags = cpuinfo.cpu()
local peer_bf16 = cpu_flags.avx512_bf16 or cpu_flags.amx_bf16
local info = synth.ensure(data)
local tmp = string.format("build/bench/e2e.%d", sys.pid())
sys.mkdir(tmp)
local epoch_arg = epochs and string.format(" --training.epochs=%d", epochs) or ""

-- machrt: the default config; only where the run folder goes, and the
-- seed (a fixed one, so two benchmark runs train alike), differ.
local run_dir = tmp .. "/runs"
local data_args = data == "data/synthetic" and ""
    or string.format(" --dataset.data_folder=%s --dataset.train_dataframe=%s", shell_quote(info.data_folder),
                     shell_quote(info.csv))
local m = timed("machrt", string.format("./machrt experiments/resnet34.lua --output_directory=%s "
                                        .. "--environment.seed=1%s%s", shell_quote(run_dir), epoch_arg, data_args),
                tmp .. "/machrt.log")
local fold_dir = run_dir .. "/final_machinetype_audio_classification/fold4"
local metrics = sys.json_decode(read(fold_dir .. "/metrics.json") or fail("no metrics.json in %s", fold_dir))
m.f1 = metrics.f1
local profile = sys.json_decode(read(fold_dir .. "/profile.json") or "null")

local peer
local python = os.getenv("PEERS_PYTHON")
if skip_peer then
    print("peer skipped: --skip-peer")
elseif not python or python == "" then
    print("peer skipped: PEERS_PYTHON is not set (a Python with torch 2.x, torchaudio, torchvision, scikit-learn)")
elseif not os.execute(string.format("%s -c 'import torch, torchaudio, torchvision, sklearn, scipy' >/dev/null 2>&1",
                                    python)) then
    print(string.format("peer skipped: %s cannot import torch, torchaudio, torchvision, scikit-learn and scipy", python))
else
    -- machrt trains in fp32 where the CPU has no bf16 (saying so); the peer
    -- then does too: PyTorch's autocast would emulate bf16 there, many times
    -- slower than its fp32, which would flatter machrt.
    if not peer_bf16 then
        print("no avx512_bf16 or amx_bf16 on this CPU: machrt trains in fp32 although the config asks "
              .. "mixed precision, so the PyTorch peer runs in fp32 too (--mixed-precision off)")
    end
    peer = timed("PyTorch", string.format("%s bench/peers/e2e_resnet34.py --data %s --epochs %d --out %s%s",
                                          python, shell_quote(info.data_folder), epochs or DEFAULT_EPOCHS,
                                          shell_quote(tmp .. "/peer"), peer_bf16 and "" or " --mixed-precision off"),
                 tmp .. "/peer.log")
    local last = (read(tmp .. "/peer.log") or ""):match("(%b{})%s*$")
    local result = last and sys.json_decode(last) or fail("the peer printed no result; see %s/peer.log", tmp)
    peer.f1, peer.pss, peer.torch = result.final.val_f1, result.peak_pss_bytes, result.torch
end

local function gb(bytes) return bytes and string.format("%.2f", bytes / 1e9) or "?" end
print(string.format("\nthe default experiment end to end (%d of %d epochs%s), data %s, fold 4",
                    epochs or DEFAULT_EPOCHS, DEFAULT_EPOCHS,
                    epochs and epochs ~= DEFAULT_EPOCHS and ": a shortened run, not the full job" or "",
                    info.data_folder))
print(cpuinfo.line())
print("| | wall (s) | CPU (s) | peak RSS (GB) | val F1 | load before -> after |")
print("|---|---|---|---|---|---|")
print(string.format("| machrt (%s) | %.1f | %.1f | %s | %.4f | %s -> %s |", peer_bf16 and "bf16" or "fp32: no bf16 on this CPU", m.wall, m.cpu, gb(m.rss), m.f1,
                    m.load_before:match("load average: (.*)$") or "?", m.load_after:match("load average: (.*)$") or "?"))
if peer then
    print(string.format("| PyTorch %s, 4 workers, 2 threads, %s | %.1f | %.1f | %s (main process; %s with its "
                        .. "workers, PSS) | %.4f | %s -> %s |", peer.torch, peer_bf16 and "bf16 autocast" or "fp32", peer.wall, peer.cpu, gb(peer.rss), gb(peer.pss),
                        peer.f1, peer.load_before:match("load average: (.*)$") or "?",
                        peer.load_after:match("load average: (.*)$") or "?"))
    local speed = peer.wall / m.wall
    local memory = m.rss and peer.pss and m.rss / peer.pss
    print(string.format("speed: machrt %.2fx PyTorch's by wall time (goal 1.5x: %s), %.2fx by CPU seconds; "
                        .. "memory: machrt %s of PyTorch's (main process and workers; goal at most 1.0x: %s)",
                        speed, speed >= 1.5 and "met" or "NOT met", peer.cpu / math.max(m.cpu, 1e-9),
                        memory and string.format("%.2fx", memory) or "?",
                        memory and (memory <= 1.0 and "met" or "NOT met") or "unknown"))
end
if profile then
    print(string.format("machrt's own profile of the fold (%.1f s, profile.json):", profile.wall_seconds))
    for _, p in ipairs(profile.parts) do
        print(string.format("  %-24s %8.1f s  %5.1f %%", p.name, p.seconds, 100 * p.share))
    end
    local bg = {}
    for _, p in ipairs(profile.background or {}) do bg[#bg + 1] = string.format("%s %.1f s", p.name, p.seconds) end
    if #bg > 0 then print("  loader workers, overlapped: " .. table.concat(bg, ", ")) end
end
os.execute("rm -rf " .. shell_quote(tmp))
