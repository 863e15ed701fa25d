// Plots through gnuplot (run as a child process, the script on its stdin):
// what `strata plot` and the evaluation commands share.
#pragma once
#include <string>

namespace strata::cli {

// A gnuplot single-quoted string: only ' needs escaping (doubled).
std::string gp_quote(const std::string& s);
// The start of a PNG script: pngcairo where gnuplot has it, png otherwise.
std::string png_terminal(int width, int height);
// Runs `script`, which writes the PNG `out`; throws when gnuplot is missing,
// fails, or writes no image.
void run_gnuplot(const std::string& script, const std::string& out);

}  // namespace strata::cli
