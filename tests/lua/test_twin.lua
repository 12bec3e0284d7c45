-- machrt against its PyTorch twin, step by step, on a committed fixture
-- (tests/fixtures/twin_tiny.json, made by tests/fixtures/gen_twin_fixture.lua):
-- the tiny run of twin_case.lua is traced again, and each step's loss and
-- gradient norm must be the twin's, teacher-forced from machrt's state, to
-- float noise; so must the learning rate and the evaluations' clip
-- probabilities. A change to the recipe (GeM, BCE, AdamW, the schedule,
-- batch norm, the evaluation path) fails here; a change to what the twin
-- was given (the front end, the initialisation, the batches, the settings)
-- is refused with the command that regenerates the fixture.

local A = require "assert"
local sys = require "machrt.sys"
local F = require "files"
local C = require "twin_case"
local tests, test, tmpdir = F.suite()

-- The float noise of one teacher-forced step (README, "Following a run in
-- PyTorch"): loss to 1.1e-6 relative, gradient norm to 4.9e-3 (PyTorch
-- against itself with oneDNN on and off: 1.5e-2 in its worst gradient
-- tensor), probabilities to 3.8e-6. The bounds sit above those.
local LOSS, GRAD_NORM, PROBS = 1e-5, 5e-3, 1e-5
-- The fingerprint of inputs that may differ in their last bits on another CPU.
local FINGERPRINT = 1e-5

local function rel(a, b) return math.abs(a - b) / math.max(math.abs(b), 1e-30) end

-- Refuses, naming what differs, when the run's inputs are not the fixture's.
local function check_inputs(got, want)
    local why
    if got.digest ~= want.digest then
        why = "the settings, shapes, targets or chunk counts differ (digest " .. got.digest .. ", the fixture's "
            .. want.digest .. ")"
    else
        local names = {}
        for name in pairs(want.fingerprint) do names[#names + 1] = name end
        table.sort(names)
        for _, name in ipairs(names) do
            local a, b = got.fingerprint[name], want.fingerprint[name]
            if not a or rel(a, b) > FINGERPRINT then
                why = string.format("%s is %s, the fixture's %.10g", name, a and string.format("%.10g", a) or "missing", b)
                break
            end
        end
    end
    if why then
        error(string.format("the traced inputs are not those the twin was given: %s. If that change is meant "
                            .. "(the front end, the initialisation, the batches or the settings), regenerate "
                            .. "the fixture with `%s` (PyTorch 2.x) and commit %s", why, C.REGENERATE, C.FIXTURE), 0)
    end
end

test("a traced tiny run follows its PyTorch twin step by step (loss, gradient norm, lr, probabilities)", function()
    local fixture = sys.json_decode(F.read(C.FIXTURE), C.FIXTURE)
    local work = tmpdir()
    local trace = work .. "/trace"
    local code, text = C.run(C.corpus(work .. "/data"), work .. "/runs", trace)
    A.eq(code, 0, "exit status; output:\n" .. text)
    check_inputs(C.inputs(trace), fixture.inputs)

    local ours, twin = C.steps(trace), fixture.twin.steps
    A.eq(#ours, #twin, "steps")
    for i, s in ipairs(twin) do
        local o = ours[i]
        A.eq(o.step, s.step)
        A.truthy(rel(o.loss, s.loss) <= LOSS, string.format("step %d: loss %.9g, the twin's %.9g (relative %.2g, "
                 .. "bound %g)", s.step, o.loss, s.loss, rel(o.loss, s.loss), LOSS))
        A.truthy(rel(o.grad_norm, s.grad_norm) <= GRAD_NORM, string.format("step %d: gradient norm %.9g, the "
                 .. "twin's %.9g (relative %.2g, bound %g)", s.step, o.grad_norm, s.grad_norm,
                 rel(o.grad_norm, s.grad_norm), GRAD_NORM))
        A.truthy(rel(o.lr, s.lr) <= 1e-8, string.format("step %d: lr %.9g, the twin's %.9g", s.step, o.lr, s.lr))
    end
    A.truthy(#fixture.twin.probs > 0, "the fixture holds evaluations")
    for n, want in ipairs(fixture.twin.probs) do
        local got = C.probs(trace, n)
        A.eq(#got, #want, "evaluation " .. n .. ": clips")
        for i, row in ipairs(want) do
            for c, p in ipairs(row) do
                A.truthy(math.abs(got[i][c] - p) <= PROBS, string.format("evaluation %d, clip %d, class %d: "
                         .. "probability %.7g, the twin's %.7g", n, i, c, got[i][c], p))
            end
        end
    end
end)

test("changed inputs are refused with the command that regenerates the fixture", function()
    local fixture = sys.json_decode(F.read(C.FIXTURE), C.FIXTURE)
    local other = { digest = fixture.inputs.digest, fingerprint = {} }
    for k, v in pairs(fixture.inputs.fingerprint) do other.fingerprint[k] = v end
    A.eq(select(2, pcall(check_inputs, other, fixture.inputs)), nil, "the fixture's own inputs pass")
    -- A sum that is not 0 (the zero-initialised biases' are), first by name.
    local names = {}
    for k, v in pairs(other.fingerprint) do if v ~= 0 then names[#names + 1] = k end end
    table.sort(names)
    local name = names[1]
    other.fingerprint[name] = other.fingerprint[name] * (1 + 1e-4)
    A.raises(function() check_inputs(other, fixture.inputs) end, name, "regenerate the fixture with",
             C.REGENERATE)
    other.digest = "0"
    A.raises(function() check_inputs(other, fixture.inputs) end, "digest 0", C.REGENERATE)
end)

return tests
