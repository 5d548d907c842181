-- wrk script for PUT benchmarks: every request uploads a different body of PUT_SIZE bytes.
-- Bodies are random bytes with a per-thread counter in front; the client computes each
-- body's SHA-256 (OpenSSL through LuaJIT's FFI) for both servers, so the load generator does
-- the same work whichever server it drives:
--   PUT_MODE=cas  PUT /cas/<sha256>              (ringcas verifies, compresses, commits)
--   PUT_MODE=dav  PUT /dav/<thread>/<n mod 16>   (nginx WebDAV; the hash goes in a header)
local ffi = require("ffi")
ffi.cdef [[
unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);
]]
local crypto = ffi.load("libcrypto.so.3")

local size = tonumber(os.getenv("PUT_SIZE") or "65536")
local mode = os.getenv("PUT_MODE") or "cas"
local threads = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

local buf, md, hex, n

function init(args)
  buf = ffi.new("uint8_t[?]", size)
  -- Fill with pseudo-random bytes: zstd cannot shrink them (the stored-raw path).
  local x = 2463534242 + id * 7919
  for i = 0, size - 1 do
    x = bit.bxor(x, bit.lshift(x, 13))
    x = bit.bxor(x, bit.rshift(x, 17))
    x = bit.bxor(x, bit.lshift(x, 5))
    buf[i] = bit.band(x, 255)
  end
  md = ffi.new("uint8_t[32]")
  hex = {}
  n = 0
end

local function sha_hex()
  crypto.SHA256(buf, size, md)
  for i = 0, 31 do
    hex[i + 1] = string.format("%02x", md[i])
  end
  return table.concat(hex)
end

function request()
  n = n + 1
  -- A distinct body per request: thread id and counter in the first 8 bytes.
  local v = n
  for i = 0, 3 do
    buf[i] = bit.band(v, 255)
    v = bit.rshift(v, 8)
  end
  buf[4] = id
  local digest = sha_hex()
  local body = ffi.string(buf, size)
  if mode == "cas" then
    return wrk.format("PUT", "/cas/" .. digest, nil, body)
  end
  return wrk.format("PUT", "/dav/" .. id .. "/" .. (n % 16), { ["X-Digest"] = digest }, body)
end

function response(status, headers, body)
  if status ~= 200 and status ~= 201 and status ~= 204 then
    io.stderr:write("unexpected status " .. status .. "\n")
  end
end
