import Editor from "./editor.js";

export default function Page() {
  return (
    <main>
      <h1>Kontext edit</h1>
      <Editor />
    </main>
  );
}
