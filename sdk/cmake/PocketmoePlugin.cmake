# pocketmoe_add_plugin(<target> MANIFEST <manifest.yaml> SOURCES <src>... [OUTPUT_DIR <dir>] [INSTALL_DIR <dir>]
#                      [NO_INSTALL] [CONFORMANCE <kind> [CONFORMANCE_OPTIONS <key=value>...]
#                                                      [CONFORMANCE_ENV <VAR=value>...]])
#
# Builds a plugin library the way the runtime expects it:
#  - a MODULE library with hidden visibility that exports only `pmoe_plugin_entry`;
#  - its manifest copied next to it with a `library:` line naming the built file;
#  - both placed in OUTPUT_DIR (default: the current binary dir) and installed to INSTALL_DIR
#    (default: <libdir>/pocketmoe), where the runtime searches.
#  - with CONFORMANCE compute|storage|cache_policy: registered with that conformance suite, which
#    a project that builds the suite (pocketmoe's tests/conformance) runs on the library with the
#    given plugin options, once as is and once more per CONFORMANCE_ENV setting.
# The target links pocketmoe::sdk; link whatever else the plugin needs yourself.
include_guard(GLOBAL)
set(_PMOE_PLUGIN_CMAKE_DIR ${CMAKE_CURRENT_LIST_DIR} CACHE INTERNAL "where PocketmoePlugin.cmake lives")

function(pocketmoe_add_plugin target)
  cmake_parse_arguments(ARG "NO_INSTALL" "MANIFEST;OUTPUT_DIR;INSTALL_DIR;CONFORMANCE"
                        "SOURCES;CONFORMANCE_OPTIONS;CONFORMANCE_ENV" ${ARGN})
  if(NOT ARG_MANIFEST)
    message(FATAL_ERROR "pocketmoe_add_plugin(${target}): MANIFEST is required")
  endif()
  if(NOT ARG_OUTPUT_DIR)
    set(ARG_OUTPUT_DIR ${CMAKE_CURRENT_BINARY_DIR})
  endif()
  if(NOT ARG_INSTALL_DIR)
    include(GNUInstallDirs)
    set(ARG_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/pocketmoe)
  endif()
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE pocketmoe::sdk)
  set_target_properties(${target} PROPERTIES
    PREFIX "lib"
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIR})
  target_link_options(${target} PRIVATE "LINKER:--version-script=${_PMOE_PLUGIN_CMAKE_DIR}/plugin.map")
  if(NOT PMOE_PLUGIN_ALLOW_UNDEFINED)  # a sanitizer runtime linked into the executable only (clang ASan) sets it
    target_link_options(${target} PRIVATE "LINKER:--no-undefined")
  endif()
  get_filename_component(manifest_src ${ARG_MANIFEST} ABSOLUTE)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${manifest_src})
  file(READ ${manifest_src} manifest_text)
  get_filename_component(manifest_name ${manifest_src} NAME)
  file(GENERATE OUTPUT ${ARG_OUTPUT_DIR}/${manifest_name}
       CONTENT "${manifest_text}library: $<TARGET_FILE_NAME:${target}>\n")
  if(ARG_CONFORMANCE)
    set_property(GLOBAL APPEND PROPERTY PMOE_CONFORMANCE_${ARG_CONFORMANCE} ${target})
    set_property(TARGET ${target} PROPERTY PMOE_CONFORMANCE_OPTIONS "${ARG_CONFORMANCE_OPTIONS}")
    set_property(TARGET ${target} PROPERTY PMOE_CONFORMANCE_ENV "${ARG_CONFORMANCE_ENV}")
    string(REGEX MATCH "- name: *([A-Za-z0-9_.-]+)" _ "${manifest_text}")  # its (first) implementation
    set_property(TARGET ${target} PROPERTY PMOE_CONFORMANCE_IMPL "${CMAKE_MATCH_1}")
  endif()
  if(NOT ARG_NO_INSTALL)
    install(TARGETS ${target} LIBRARY DESTINATION ${ARG_INSTALL_DIR})
    install(FILES ${ARG_OUTPUT_DIR}/${manifest_name} DESTINATION ${ARG_INSTALL_DIR})
  endif()
endfunction()
