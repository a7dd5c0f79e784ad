// The listening page's script, inlined into index.html by pipeline.listen.render_page:
// the label and speaker filters, and one player at a time.
(function(){
  var fl=document.getElementById('f-label'), fs=document.getElementById('f-speaker');
  function apply(){
    var l=fl.value, s=fs.value;
    document.querySelectorAll('tr[data-label]').forEach(function(tr){
      tr.hidden=(l!=='' && tr.dataset.label!==l)||(s!=='' && tr.dataset.speaker!==s);
    });
    document.querySelectorAll('tr.group').forEach(function(tr){
      tr.hidden=(l!=='' && tr.dataset.group!==l);
    });
  }
  fl.addEventListener('change',apply); fs.addEventListener('change',apply);
  document.addEventListener('play',function(e){
    document.querySelectorAll('audio').forEach(function(a){ if(a!==e.target) a.pause(); });
  },true);
})();
