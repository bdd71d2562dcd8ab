// pocketmoe plugins: what the search paths hold, whether each library loads, whether a config fits.
#include <pocketmoe/abi.h>

#include <filesystem>
#include <iomanip>
#include <iostream>
#include <optional>

#include "cli/cli_common.hpp"
#include "cli/commands.hpp"
#include "config/config.hpp"
#include "experts/lru_policy.hpp"
#include "plugin/registry.hpp"

namespace pmoe::cli {

namespace {

void print_options(const ImplManifest& impl) {
  size_t w = 0;
  for (const auto& o : impl.options) w = std::max(w, o.name.size());
  for (const auto& o : impl.options) {
    std::string extra = o.default_value.empty() ? "" : "default " + o.default_value;
    if (o.min || o.max)
      extra += (extra.empty() ? "" : ", ") + std::string("range ") +
               (o.min ? std::to_string(*o.min) : "") + ".." + (o.max ? std::to_string(*o.max) : "");
    if (!o.values.empty()) {
      extra += (extra.empty() ? "" : ", ") + std::string("one of");
      for (const auto& v : o.values) extra += " " + v;
    }
    std::cout << "        " << std::left << std::setw(static_cast<int>(w) + 2) << o.name
              << std::setw(8) << o.type << o.doc << (extra.empty() ? "" : " (" + extra + ")") << "\n";
  }
}

}  // namespace

int cmd_plugins(int argc, char** argv) {
  return run_command("plugins", [&] {
    po::options_description opts("options");
    opts.add_options()("help,h", "show this help")(
        "config,c", po::value<std::string>(), "also check this config against the manifests")(
        "plugin-path,P", po::value<std::vector<std::string>>(),
        "search this directory first (repeatable)")(
        "check", "exit 1 if any plugin library fails to load");
    auto vm = parse_args(argc, argv, opts);
    if (vm.count("help"))
      return print_help("plugins [-c CONFIG] [-P DIR]... [--check]",
                        "Lists the plugin search paths, every plugin found there with its "
                        "implementations and options, and loads each library to check it.",
                        opts);

    std::optional<Config> cfg;
    std::vector<std::string> extra;
    if (vm.count("plugin-path")) extra = vm["plugin-path"].as<std::vector<std::string>>();
    if (vm.count("config")) {
      cfg = load_config(vm["config"].as<std::string>());
      extra.insert(extra.end(), cfg->plugin_paths.begin(), cfg->plugin_paths.end());
    }
    register_lru_policy();
    PluginRegistry reg(extra);

    std::cout << "search paths:\n";
    for (const auto& p : reg.search_paths()) {
      std::error_code ec;
      std::cout << "  " << p << (std::filesystem::is_directory(p, ec) ? "" : "  (missing)") << "\n";
    }
    for (const auto& s : reg.shadowed()) std::cout << "  skipped " << s << "\n";

    int failed = int(reg.unreadable().size());  // a broken manifest is an error here, where plugins are checked
    for (const auto& s : reg.unreadable()) std::cout << "  FAILED (unreadable manifest) " << s << "\n";
    std::cout << "\nplugins:\n";
    for (const auto& m : reg.manifests()) {
      std::cout << "  " << m.plugin << " " << m.version << "  (ABI " << m.abi_major << "."
                << m.abi_minor << (m.builtin ? ", built-in" : "") << ")\n";
      if (!m.builtin) {
        std::cout << "    manifest: " << m.manifest_path << "\n    library:  " << m.library_path
                  << "\n";
        try {
          reg.load_library(m);
          std::cout << "    loads:    ok\n";
        } catch (const Error& e) {
          ++failed;
          std::cout << "    loads:    FAILED: " << e.what() << "\n";
        }
      }
      for (const auto& impl : m.provides) {
        std::cout << "    - " << impl.name << " [" << pmoe_kind_name(impl.kind) << "]  "
                  << impl.description << "\n";
        print_options(impl);
      }
    }

    int rc = (failed && vm.count("check")) ? kExitError : kExitOk;
    if (cfg) {
      std::cout << "\nconfig " << cfg->path << ": ";
      try {
        reg.check_config(*cfg);
        std::cout << "ok\n";
      } catch (const Error& e) {
        std::cout << "INVALID\n";
        std::cerr << "error: " << e.what() << "\n";
        rc = kExitError;
      }
    }
    if (failed) std::cout << "\n" << failed << " plugin(s) failed to load\n";
    return rc;
  });
}

}  // namespace pmoe::cli
