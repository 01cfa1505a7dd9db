// The page of `lrformer serve`: upload an image, show the overlay, the legend and a download link.
"use strict";
const $ = (id) => document.getElementById(id);
let model = null;
let photo = null;   // the uploaded image (ImageBitmap)
let labels = null;  // the label map drawn in its palette colours (canvas)

async function loadModel() {
  const response = await fetch("/model");
  model = await response.json();
  $("model").textContent = `${model.name || "model"}: ${model.num_classes} classes`;
}

function draw() {
  const canvas = $("canvas");
  canvas.width = photo.width;
  canvas.height = photo.height;
  const context = canvas.getContext("2d");
  context.globalAlpha = 1;
  context.drawImage(photo, 0, 0);
  context.globalAlpha = Number($("opacity").value);
  context.drawImage(labels, 0, 0);
}

function legend(classes) {
  // the server's class fractions (X-Classes), most pixels first
  const body = $("legend").querySelector("tbody");
  body.replaceChildren();
  classes.forEach((entry) => {
    const row = body.insertRow();
    row.className = "entry";
    row.dataset.classId = String(entry.id);
    const swatch = row.insertCell();
    swatch.className = "swatch";
    const color = model.palette[entry.id] || [0, 0, 0];
    swatch.style.background = `rgb(${color.join(",")})`;
    row.insertCell().textContent = entry.name;
    row.insertCell().textContent = `${(100 * entry.fraction).toFixed(1)}%`;
  });
}

function fail(message) {
  $("status").className = "error";
  $("status").textContent = message;
}

async function segment(file) {
  try {
    await run(file);
  } catch (error) {
    fail(`error: ${error.message || error}`);
  }
}

async function run(file) {
  $("status").className = "";
  $("status").textContent = `segmenting ${file.name}…`;
  const form = new FormData();
  form.append("image", file);
  const started = performance.now();
  const response = await fetch("/predict?format=png", { method: "POST", body: form });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({ error: response.statusText }));
    fail(`error ${response.status}: ${problem.error}`);
    return;
  }
  const classes = JSON.parse(response.headers.get("X-Classes") || "[]");
  const png = await response.blob();
  photo = await createImageBitmap(file);
  const bitmap = await createImageBitmap(png);
  labels = document.createElement("canvas");
  labels.width = bitmap.width;
  labels.height = bitmap.height;
  labels.getContext("2d").drawImage(bitmap, 0, 0);
  if ($("download").href) URL.revokeObjectURL($("download").href);
  $("download").href = URL.createObjectURL(png);
  $("download").download = file.name.replace(/\.[^.]*$/, "") + "_label.png";
  $("result").hidden = false;
  draw();
  legend(classes);
  $("status").textContent = `${file.name}: ${photo.width}×${photo.height}, ${Math.round(performance.now() - started)} ms`;
  document.body.dataset.done = "1";
}

$("file").addEventListener("change", (event) => event.target.files[0] && segment(event.target.files[0]));
$("opacity").addEventListener("input", () => photo && draw());
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) segment(event.dataTransfer.files[0]);
});
loadModel();
