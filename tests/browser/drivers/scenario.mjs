// A scenario's input is one JSON argument; its output one JSON document on stdout, which the
// pytest side parses and asserts on.
export async function main(run) {
  const input = JSON.parse(process.argv[2] || "{}");
  try {
    const output = await run(input);
    process.stdout.write(JSON.stringify(output));
  } catch (error) {
    process.stdout.write(JSON.stringify({ fatal: String((error && error.stack) || error) }));
    process.exitCode = 1;
  }
}
