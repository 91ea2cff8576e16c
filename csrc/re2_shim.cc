// The one thing divert-webhook asks of Google RE2: does it compile a pattern as Envoy compiles
// it (`re2::RE2(pattern, re2::RE2::Quiet)`), and how large is the program (what Envoy compares
// with `re2.max_program_size.error_level`)? Called from src/re2.rs.
//
// Nothing escapes to Rust but plain data: the RE2 object lives on this stack, texts are copied
// (cut to the caller's buffer) and every C++ exception (std::bad_alloc) is caught here.

#include <re2/re2.h>

#include <cstddef>
#include <cstring>
#include <string>

extern "C" {

// What became of one pattern. `code` is re2::RE2::ErrorCode (0: compiled), or -1 when RE2
// could not be asked (an exception, out of memory).
struct divert_re2_verdict {
  int code;
  // ProgramSize() when compiled, else -1.
  long program_size;
  // RE2's error text without its argument ("invalid escape sequence"), cut to fit.
  char reason[128];
  size_t reason_len;
  // The fragment of the pattern RE2 names (error_arg(), may be empty), cut to fit;
  // `argument_full_len` is its length before cutting.
  char argument[256];
  size_t argument_len;
  size_t argument_full_len;
};

static void copy_cut(const std::string& from, char* to, size_t capacity, size_t* len) {
  *len = from.size() < capacity ? from.size() : capacity;
  std::memcpy(to, from.data(), *len);
}

void divert_re2_compile(const char* pattern, size_t pattern_len, struct divert_re2_verdict* out) {
  out->code = -1;
  out->program_size = -1;
  out->reason_len = 0;
  out->argument_len = 0;
  out->argument_full_len = 0;
  try {
    const re2::RE2 re(re2::StringPiece(pattern, pattern_len), re2::RE2::Quiet);
    out->code = static_cast<int>(re.error_code());
    if (re.ok()) {
      out->program_size = re.ProgramSize();
      return;
    }
    // error() is "<reason>: <argument>", or the reason alone when there is no argument.
    const std::string& error = re.error();
    const std::string& argument = re.error_arg();
    std::string reason = error;
    const std::string suffix = ": " + argument;
    if (!argument.empty() && error.size() >= suffix.size() &&
        error.compare(error.size() - suffix.size(), suffix.size(), suffix) == 0) {
      reason = error.substr(0, error.size() - suffix.size());
    }
    copy_cut(reason, out->reason, sizeof out->reason, &out->reason_len);
    copy_cut(argument, out->argument, sizeof out->argument, &out->argument_len);
    out->argument_full_len = argument.size();
  } catch (...) {
    out->code = -1;
    out->program_size = -1;
  }
}

// Does `text` match `pattern`? 1: yes, 0: no, -1: the pattern does not compile (or RE2 could
// not be asked). `whole`: the whole text must match (RE2::FullMatch, what Envoy does);
// otherwise a match anywhere in it counts (RE2::PartialMatch, an unanchored search). For the
// tests that run the divert baggage match through RE2 as the data planes do.
int divert_re2_match(const char* pattern, size_t pattern_len, const char* text, size_t text_len, int whole) {
  try {
    const re2::RE2 re(re2::StringPiece(pattern, pattern_len), re2::RE2::Quiet);
    if (!re.ok()) {
      return -1;
    }
    const re2::StringPiece input(text, text_len);
    const bool matched = whole ? re2::RE2::FullMatch(input, re) : re2::RE2::PartialMatch(input, re);
    return matched ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
